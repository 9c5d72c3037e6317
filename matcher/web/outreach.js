/*
 * matcher outreach page: what can help here, now, with free capacity; report a concern.
 *
 * Plain JavaScript over matcher's JSON API; Leaflet is the only library. Every text shown
 * comes from a message catalog (web/locales/<lang>.json) or from the data, and is set with
 * textContent. The API key stays in this tab's sessionStorage (as on the map page).
 *
 * Reports are never lost: a report is first put in a queue in this device's localStorage,
 * with its own Idempotency-Key, and then sent. A network failure, a 5xx or a 429 leaves it
 * in the queue and it is sent again (with the same key) when the browser is back online or
 * after a growing delay, so a retry never creates a second need. A report the server
 * refuses (4xx) leaves the queue and the page says why.
 */
(function () {
  "use strict";

  var KEY_STORE = "matcher.apiKey";
  var LANG_STORE = "matcher.lang";
  var QUEUE_STORE = "matcher.outreach.queue";
  var API = "api/v1/";
  var LOCALES = ["en", "es"];
  var FALLBACK_KM = 500;
  var RETRY_MIN_MS = 2000;
  var RETRY_MAX_MS = 60000;
  var GEOCODER_RESULTS = 5;
  var RESULTS = 10;
  var SEND_TIMEOUT_MS = 20000;

  var state = {
    key: null,
    keyId: null,
    role: null,
    cfg: null,
    lang: "en",
    msgs: {},
    point: null, // {lat, lon}
    category: null, // a category code, or null for all
    answer: null, // the last nearby answer
    report: null, // the last report's answer (or error)
    retryMs: RETRY_MIN_MS,
    retryTimer: null,
    flushing: false,
    searches: 0, // the number of the latest nearby search (an older answer is dropped)
    map: null,
    here: null,
    marks: null
  };

  function $(id) { return document.getElementById(id); }

  var h = window.matcherWeb.h;

  // ------------------------------------------------------------------ languages

  function t(key, params) {
    var text = Object.prototype.hasOwnProperty.call(state.msgs, key) ? state.msgs[key] : key;
    return text.replace(/\{(\w+)\}/g, function (m, name) {
      return params && Object.prototype.hasOwnProperty.call(params, name)
        ? String(params[name]) : m;
    });
  }

  function num(x, digits) {
    return Number(x).toLocaleString(state.lang, {
      maximumFractionDigits: digits === undefined ? 2 : digits
    });
  }

  function categoryName(code) {
    var key = "category." + code;
    return Object.prototype.hasOwnProperty.call(state.msgs, key) ? t(key) : code;
  }

  function pickLanguage() {
    var stored = localStorage.getItem(LANG_STORE);
    if (LOCALES.indexOf(stored) >= 0) return stored;
    var wanted = navigator.languages || [navigator.language || "en"];
    for (var i = 0; i < wanted.length; i++) {
      var base = String(wanted[i]).toLowerCase().split("-")[0];
      if (LOCALES.indexOf(base) >= 0) return base;
    }
    return "en";
  }

  function loadLanguage(code) {
    return fetch("web/locales/" + code + ".json").then(function (r) {
      if (!r.ok) throw new Error("catalog " + code + ": " + r.status);
      return r.json();
    }).then(function (msgs) {
      state.msgs = msgs;
      state.lang = code;
      document.documentElement.lang = code;
      applyLanguage();
    });
  }

  function applyLanguage() {
    document.querySelectorAll("[data-i18n]").forEach(function (el) {
      el.textContent = t(el.dataset.i18n);
    });
    document.querySelectorAll("[data-i18n-placeholder]").forEach(function (el) {
      el.placeholder = t(el.dataset.i18nPlaceholder);
    });
    document.querySelectorAll("[data-i18n-aria-label]").forEach(function (el) {
      el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
    });
    document.title = t("title");
    $("lang").value = state.lang;
    if (state.cfg) {
      renderChips();
      renderCategoryOptions();
    }
    if (state.role) $("who").textContent = t("key.signed_in", { role: state.role });
    renderWhere();
    renderAnswer();
    renderReport();
    renderQueue();
  }

  // ------------------------------------------------------------------ API

  function problemText(body, status) {
    if (!body || typeof body !== "object") return "HTTP " + status;
    var text = body.detail || body.title || "HTTP " + status;
    if (Array.isArray(body.problems) && body.problems.length) {
      text += ": " + body.problems.slice(0, 3).map(function (p) {
        return (p.field ? p.field + " " : "") + p.reason;
      }).join("; ");
    }
    return text;
  }

  function api(path, opts) {
    var o = opts || {};
    var headers = { Authorization: "Bearer " + state.key };
    Object.keys(o.headers || {}).forEach(function (k) { headers[k] = o.headers[k]; });
    if (o.body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(API + path, {
      method: o.method || "GET",
      headers: headers,
      body: o.body === undefined ? undefined : JSON.stringify(o.body)
    }).then(function (r) {
      return r.json().catch(function () { return null; }).then(function (body) {
        if (!r.ok) {
          var err = new Error(problemText(body, r.status));
          err.status = r.status;
          throw err;
        }
        return body;
      });
    });
  }

  // ------------------------------------------------------------------ sign in

  function signIn(key) {
    state.key = key;
    $("key-status").textContent = t("key.checking");
    return api("me").then(function (me) {
      sessionStorage.setItem(KEY_STORE, key);
      state.role = me.role;
      state.keyId = me.key_id;
      $("key-status").textContent = "";
      $("signin").hidden = true;
      $("app").hidden = false;
      $("who").textContent = t("key.signed_in", { role: me.role });
      startMap();
      document.body.dataset.state = "ready";
      renderQueue();
      flush();
    }, function (err) {
      state.key = null;
      sessionStorage.removeItem(KEY_STORE);
      $("key-status").textContent = t("key.bad", { status: err.status || err.message });
      document.body.dataset.state = "signin";
    });
  }

  function signOut() {
    sessionStorage.removeItem(KEY_STORE);
    state.key = state.role = state.keyId = null;
    // nothing of this session stays on screen for the next person (an admin's answers
    // come from volunteers' exact points); reports waiting to be sent stay queued on the
    // device for their own key
    if (state.retryTimer) clearTimeout(state.retryTimer);
    state.retryTimer = null;
    state.point = state.answer = state.report = null;
    delete document.body.dataset.point;
    state.searches += 1;
    if (state.here && state.map) state.map.removeLayer(state.here);
    state.here = null;
    $("place-results").replaceChildren();
    $("place-q").value = "";
    $("report-form").reset();
    closeReport();
    renderWhere();
    renderAnswer();
    renderReport();
    $("app").hidden = true;
    $("signin").hidden = false;
    $("key-input").value = "";
    document.body.dataset.state = "signin";
  }

  // ------------------------------------------------------------------ map

  function startMap() {
    if (state.map) {
      state.map.invalidateSize();
      return;
    }
    var map = L.map("map", { zoomControl: true }).setView([20, 0], 2);
    L.control.scale({ imperial: false }).addTo(map);
    state.map = map;
    state.marks = L.layerGroup().addTo(map);
    window.matcherWeb.addBaseMap(map, state.cfg || {}, $("base-status"), {
      none: t("map.no_base"), unavailable: t("map.base_unavailable")
    });
    map.on("click", function (e) { setPoint(e.latlng.lat, e.latlng.lng); });
  }

  function setPoint(lat, lon) {
    state.point = { lat: lat, lon: lon };
    document.body.dataset.point = lat + "," + lon; // the exact point asked about (tests)
    state.answer = null;
    if (state.map) {
      if (state.here) state.map.removeLayer(state.here);
      state.here = L.circleMarker([lat, lon], {
        radius: 9, className: "mo-here", color: "#e63946", weight: 3, fillOpacity: 0.3
      }).addTo(state.map);
      state.map.setView([lat, lon], Math.max(state.map.getZoom(), 14));
    }
    renderWhere();
    search();
  }

  function renderWhere() {
    var el = $("where");
    if (!state.point) {
      el.textContent = t("where.none");
      return;
    }
    var p = { lat: num(state.point.lat, 5), lon: num(state.point.lon, 5) };
    var hood = state.answer && state.answer.neighborhood;
    el.textContent = hood ? t("where.here_in", Object.assign(p, { neighborhood: hood.name }))
      : t("where.here", p);
  }

  // ------------------------------------------------------------------ where: near me, places

  function nearMe() {
    if (!navigator.geolocation) {
      $("where").textContent = t("where.denied", { reason: "no geolocation" });
      return;
    }
    $("where").textContent = t("where.locating");
    navigator.geolocation.getCurrentPosition(function (pos) {
      setPoint(pos.coords.latitude, pos.coords.longitude);
    }, function (err) {
      $("where").textContent = t("where.denied", { reason: err.message || err.code });
    }, { enableHighAccuracy: true, timeout: 15000, maximumAge: 60000 });
  }

  function placeButton(place, kindText) {
    var btn = h("button", { type: "button", className: "place", "data-kind": place.kind || "",
      "data-id": place.id || "" },
      h("span", { text: place.name }), " ",
      h("span", { className: "kind", text: kindText }));
    btn.addEventListener("click", function () {
      $("place-results").replaceChildren();
      setPoint(place.lat, place.lon);
    });
    return h("li", {}, btn);
  }

  function searchPlaces(q) {
    var list = $("place-results");
    list.replaceChildren();
    return api("places?q=" + encodeURIComponent(q) + "&limit=8").then(function (body) {
      if (body.places.length) {
        body.places.forEach(function (p) {
          list.appendChild(placeButton(p, t("place." + p.kind)));
        });
        return;
      }
      var url = state.cfg && state.cfg.geocoder_url;
      if (!url) {
        list.appendChild(h("li", { text: t("where.no_place", { q: q }) }));
        return;
      }
      return fetch(url.replace("{q}", encodeURIComponent(q))).then(function (r) {
        return r.ok ? r.json() : [];
      }).then(function (found) {
        var places = (Array.isArray(found) ? found : []).map(function (f) {
          return { name: String(f.display_name || q), kind: "geocoder", lat: Number(f.lat),
            lon: Number(f.lon) };
        }).filter(function (p) {
          return isFinite(p.lat) && isFinite(p.lon) && Math.abs(p.lat) <= 90 &&
            Math.abs(p.lon) <= 180;
        }).slice(0, GEOCODER_RESULTS);
        if (!places.length) list.appendChild(h("li", { text: t("where.no_place", { q: q }) }));
        places.forEach(function (p) {
          list.appendChild(placeButton(p, t("where.from_geocoder")));
        });
      });
    }).catch(function (err) {
      list.appendChild(h("li", { text: t("results.error", { message: err.message }) }));
    });
  }

  // ------------------------------------------------------------------ what: chips, filters

  function renderChips() {
    var box = $("chips");
    box.replaceChildren();
    var all = [null].concat(state.cfg.categories);
    all.forEach(function (code) {
      var chip = h("button", {
        type: "button", className: "chip", "data-category": code || "",
        "aria-pressed": String(state.category === code),
        text: code === null ? t("what.all") : categoryName(code)
      });
      chip.addEventListener("click", function () {
        state.category = code;
        renderChips();
        search();
      });
      box.appendChild(chip);
    });
  }

  function renderCategoryOptions() {
    var select = $("report-category");
    var chosen = select.value;
    select.replaceChildren();
    state.cfg.categories.forEach(function (code) {
      select.appendChild(h("option", { value: code, text: categoryName(code) }));
    });
    if (chosen) select.value = chosen;
  }

  // ------------------------------------------------------------------ results

  function search() {
    if (!state.point || !state.key) return Promise.resolve();
    var p = state.point;
    var query = "lat=" + p.lat + "&lon=" + p.lon + "&radius_km=" + $("radius").value +
      "&limit=" + RESULTS + "&free_only=" + ($("free-only").checked ? "true" : "false") +
      (state.category ? "&category=" + encodeURIComponent(state.category) : "");
    document.body.dataset.results = "loading";
    $("summary").textContent = t("results.loading");
    var radius = Number($("radius").value);
    var number = ++state.searches;
    return api("resources/nearby?" + query).then(function (answer) {
      if (number !== state.searches) return; // a newer search is on its way
      answer.radius = radius;
      state.answer = answer;
      renderWhere();
      renderAnswer();
      document.body.dataset.results = "done";
    }, function (err) {
      if (number !== state.searches) return;
      state.answer = { error: err.message };
      renderAnswer();
      document.body.dataset.results = "error";
    });
  }

  function partnerItem(r) {
    var free = r.free_capacity > 0
      ? h("span", { text: t("results.free", { free: num(r.free_capacity), capacity: num(r.capacity) }) })
      : h("span", { className: "full", text: t("results.full") });
    var meta = [t("kind." + r.kind)];
    if (r.languages && r.languages.length) {
      meta.push(t("results.languages", { list: r.languages.join(", ") }));
    }
    return h("li", { className: "result", "data-partner": r.partner_id },
      h("div", { className: "name", text: r.name }),
      h("div", { className: "meta" }, t("results.distance", { km: num(r.distance_km) }) + " · ",
        free, " · " + meta.join(" · ")));
  }

  function renderAnswer() {
    var a = state.answer;
    var list = $("results");
    list.replaceChildren();
    $("nearest-free").replaceChildren();
    $("fallback").hidden = true;
    $("escalate").hidden = true;
    if (state.marks) state.marks.clearLayers();
    if (!a) {
      $("summary").textContent = "";
      return;
    }
    if (a.error) {
      $("summary").textContent = t("results.error", { message: a.error });
      return;
    }
    var radius = num(a.radius);
    a.results.forEach(function (r) {
      list.appendChild(partnerItem(r));
      mark(r);
    });
    var free = a.results.filter(function (r) { return r.free_capacity > 0; }).length;
    if (free) {
      $("summary").textContent = t("results.count_free", { count: free, radius: radius });
    } else if (a.in_radius) {
      $("summary").textContent = t("results.none_free", { count: a.in_radius, radius: radius });
    } else {
      $("summary").textContent = t("results.none_in_radius", { radius: radius });
    }
    if (!free) {
      var nearest = $("nearest-free");
      a.nearest_free.forEach(function (r) {
        nearest.appendChild(partnerItem(r));
        mark(r);
      });
      $("fallback-head").textContent = a.nearest_free.length ? t("results.nearest_free")
        : t("results.no_nearest_free", { km: num(FALLBACK_KM) });
      $("fallback").hidden = false;
    }
    fitToMarks();
    if (a.escalate_to) {
      var esc = $("escalate");
      esc.textContent = a.neighborhood
        ? t("results.escalate_in", { neighborhood: a.neighborhood.name, contact: a.escalate_to })
        : t("results.escalate", { contact: a.escalate_to });
      esc.hidden = false;
    }
  }

  /** Show the chosen point and every partner listed (the nearest with capacity too). */
  function fitToMarks() {
    if (!state.map || !state.point || !state.marks.getLayers().length) return;
    var bounds = L.latLngBounds([[state.point.lat, state.point.lon]]);
    state.marks.eachLayer(function (m) { bounds.extend(m.getLatLng()); });
    state.map.fitBounds(bounds, { padding: [24, 24], maxZoom: 16 });
  }

  function mark(r) {
    if (!state.marks) return;
    L.circleMarker([r.lat, r.lon], {
      radius: 6, color: r.free_capacity > 0 ? "#2a9d8f" : "#a4161a", weight: 2, fillOpacity: 0.6
    }).bindTooltip(h("span", { text: r.name })).addTo(state.marks); // text, never HTML
  }

  // ------------------------------------------------------------------ report a concern

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) {
      return (b + 256).toString(16).slice(1);
    }).join("");
  }

  function loadQueue() {
    try {
      var q = JSON.parse(localStorage.getItem(QUEUE_STORE) || "[]");
      return Array.isArray(q) ? q : [];
    } catch (e) {
      return [];
    }
  }

  function saveQueue(q) { localStorage.setItem(QUEUE_STORE, JSON.stringify(q)); }

  function mine(item) { return item.key_id === state.keyId; }

  function renderQueue() {
    var waiting = loadQueue().filter(mine).length;
    var el = $("queue-status");
    el.hidden = waiting === 0;
    el.textContent = waiting ? t("report.queued", { count: waiting }) : "";
    document.body.dataset.queue = String(waiting);
  }

  function openReport() {
    if (!state.point) {
      state.report = { error: t("report.no_location") };
      renderReport();
      return;
    }
    if (state.category) $("report-category").value = state.category;
    $("report-form").hidden = false;
    $("report-open").hidden = true;
  }

  function closeReport() {
    $("report-form").hidden = true;
    $("report-open").hidden = false;
  }

  function sendReport(ev) {
    ev.preventDefault();
    if (!state.point) return openReport();
    var languages = $("report-languages").value.split(/[\s,;]+/).filter(Boolean);
    var note = $("report-note").value.trim();
    var body = {
      category: $("report-category").value,
      lat: state.point.lat,
      lon: state.point.lon,
      demand: Number($("report-demand").value),
      severity: Number($("report-severity").value),
      languages: languages,
      reported_at: new Date().toISOString().replace(/\.\d{3}Z$/, "Z"),
      source: "outreach page"
    };
    if (note) body.note = note;
    var q = loadQueue();
    q.push({ id: newKey(), key_id: state.keyId, body: body, queued_at: Date.now() });
    saveQueue(q);
    $("report-form").reset();
    closeReport();
    state.report = { sending: true };
    renderReport();
    renderQueue();
    state.retryMs = RETRY_MIN_MS;
    flush();
  }

  function drop(id) {
    saveQueue(loadQueue().filter(function (item) { return item.id !== id; }));
    renderQueue();
  }

  function retryLater() {
    if (state.retryTimer) return;
    state.retryTimer = setTimeout(function () {
      state.retryTimer = null;
      flush();
    }, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, RETRY_MAX_MS);
  }

  /** Send the oldest waiting report of this key; on success, the next one. */
  function flush() {
    if (state.flushing || !state.key) return;
    var item = loadQueue().filter(mine)[0];
    if (!item) return;
    state.flushing = true;
    document.body.dataset.sending = "true";
    var abort = new AbortController(); // a request that never answers is a failed one
    var timer = setTimeout(function () { abort.abort(); }, SEND_TIMEOUT_MS);
    fetch(API + "needs", {
      method: "POST",
      signal: abort.signal,
      headers: {
        Authorization: "Bearer " + state.key,
        "Content-Type": "application/json",
        "Idempotency-Key": item.id
      },
      body: JSON.stringify(item.body)
    }).then(function (r) {
      return r.json().catch(function () { return null; }).then(function (body) {
        clearTimeout(timer);
        state.flushing = false;
        document.body.dataset.sending = "false";
        if (r.status === 200 || r.status === 201) {
          drop(item.id);
          state.retryMs = RETRY_MIN_MS;
          state.report = { answer: body };
          renderReport();
          flush();
        } else if (r.status === 401 || r.status === 403) { // kept for a key that may send it
          state.report = { error: t("report.sign_in_again") };
          renderReport();
        } else if (r.status === 410) { // taken, and its need removed since by a planner
          drop(item.id);
          state.report = { error: t("report.gone") };
          renderReport();
          flush();
        } else if (r.status === 429 || r.status >= 500) {
          retryLater();
        } else { // refused for good (400, 409, 410, 413, 415, 422): say why, send the next
          drop(item.id);
          state.report = { error: t("report.rejected", { message: problemText(body, r.status) }) };
          renderReport();
          flush();
        }
      });
    }, function () { // no connection (or no answer in time): keep it, try again
      clearTimeout(timer);
      state.flushing = false;
      document.body.dataset.sending = "false";
      state.report = { offline: true };
      renderReport();
      retryLater();
    });
  }

  function renderReport() {
    var box = $("report-result");
    var r = state.report;
    box.replaceChildren();
    box.className = "report-result";
    box.hidden = !r;
    if (!r) return;
    if (r.error) {
      box.className = "report-result error";
      box.appendChild(h("p", { text: r.error }));
      return;
    }
    if (r.sending) return box.appendChild(h("p", { text: t("report.sending") }));
    if (r.offline) return box.appendChild(h("p", { text: t("report.offline") }));
    var a = r.answer;
    box.dataset.needId = a.need.need_id;
    box.appendChild(h("p", { className: "outcome", text: a.created
      ? t("report.created", { id: a.need.need_id })
      : t("report.linked", { id: a.linked_to }) }));
    box.appendChild(h("p", { className: "cluster", text: a.cluster_id
      ? t("report.cluster", { id: a.cluster_id }) : t("report.no_cluster") }));
    if (a.recommendations.length) {
      box.appendChild(h("p", { text: t("report.recommended") }));
      var list = h("ol", { className: "results recs" });
      a.recommendations.forEach(function (rec) { list.appendChild(partnerItem(rec)); });
      box.appendChild(list);
    } else {
      box.appendChild(h("p", { text: a.partners_in_reach
        ? t("report.no_recommendation_full") : t("report.no_recommendation_none") }));
    }
    if (a.escalate_to) {
      box.appendChild(h("p", { className: "escalate", text: t("results.escalate", {
        contact: a.escalate_to }) }));
    }
  }

  // ------------------------------------------------------------------ start

  function start() {
    LOCALES.forEach(function (code) {
      $("lang").appendChild(h("option", { value: code, text: code.toUpperCase() }));
    });
    $("lang").addEventListener("change", function () {
      localStorage.setItem(LANG_STORE, this.value);
      loadLanguage(this.value);
    });
    $("key-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var key = $("key-input").value.trim();
      if (key) signIn(key);
    });
    $("key-forget").addEventListener("click", signOut);
    $("near-me").addEventListener("click", nearMe);
    $("place-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var q = $("place-q").value.trim();
      if (q) searchPlaces(q);
    });
    $("radius").addEventListener("change", search);
    $("free-only").addEventListener("change", search);
    $("report-open").addEventListener("click", openReport);
    $("report-cancel").addEventListener("click", closeReport);
    $("report-form").addEventListener("submit", sendReport);
    window.addEventListener("online", function () {
      state.retryMs = RETRY_MIN_MS;
      flush();
    });
    fetch(API + "map/config").then(function (r) { return r.json(); }).then(function (cfg) {
      state.cfg = cfg;
      return loadLanguage(pickLanguage());
    }).then(function () {
      var key = sessionStorage.getItem(KEY_STORE);
      if (key) return signIn(key);
      document.body.dataset.state = "signin";
    }).catch(function (err) {
      $("key-status").textContent = String(err.message || err);
      document.body.dataset.state = "error";
    });
  }

  start();
})();
