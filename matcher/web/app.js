/*
 * matcher planner map: plain JavaScript over matcher's JSON API; Leaflet is the only library.
 *
 * Data: GET api/v1/map/config (no key), then with the user's API key (kept in this tab's
 * sessionStorage only) GET api/v1/me, api/v1/plans/latest and api/v1/plans/{id}/map.
 * A planner or admin key can start a plan (POST api/v1/plans); the page polls it and
 * replaces the map when it is done. Every text from the data is set with textContent.
 * "#plan=<id>" in the address shows that plan (e.g. a what-if scenario) instead of the latest.
 */
(function () {
  "use strict";

  var KEY_STORE = "matcher.apiKey";
  var API = "api/v1/";
  var POLL_MS = 500;
  var POLL_LIMIT_MS = 15 * 60 * 1000;

  var CATEGORY_COLORS = {
    youth_engagement: "#1f77b4",
    crime_prevention: "#d62728",
    elderly_support: "#9467bd",
    victim_support: "#e377c2",
    mental_health: "#17becf",
    substance_use: "#8c564b",
    housing_stability: "#ff7f0e",
    food_access: "#2ca02c",
    environmental_design: "#bcbd22",
    language_access: "#7f7f7f",
    digital_access: "#393b79",
    education: "#637939",
    transportation: "#8c6d31",
    conflict_mediation: "#843c39",
    reentry_support: "#7b4173"
  };
  var EXTRA_COLORS = ["#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363", "#de9ed6"];

  var REASONS = {
    no_partner_in_range: "no partner within reach offers this category",
    partners_in_range_full: "every partner within reach is already full"
  };

  // coverage classes of the neighborhood choropleth (upper bound, colour, label)
  var COVERAGE_CLASSES = [
    [0.25, "#d7191c", "< 25%"],
    [0.5, "#fdae61", "25–50%"],
    [0.75, "#ffffbf", "50–75%"],
    [0.9, "#a6d96a", "75–90%"],
    [Infinity, "#1a9641", "≥ 90%"]
  ];
  var NO_DEMAND = "#d9d9d9";

  // gap classes: unmet units as a share of the largest neighborhood gap of the plan
  var GAP_COLORS = ["#fee5d9", "#fcae91", "#fb6a4a", "#cb181d"];
  var NO_GAP = "#e5f5e0";

  var LAYERS = [
    { id: "neighborhoods", label: "Neighborhood coverage", pane: "mm-hoods", z: 350 },
    // optional layers are listed only when the plan has them (gaps.geojson, recruit.geojson);
    // the coverage and gap choropleths share the polygons, so one hides the other
    { id: "gaps", label: "Gaps (unmet units)", pane: "mm-gaps", z: 355, optional: true,
      off: true, excludes: "neighborhoods" },
    { id: "clusters", label: "Need clusters", pane: "mm-clusters", z: 400 },
    { id: "unmet", label: "Unmet clusters", pane: "mm-unmet", z: 410 },
    { id: "assignments", label: "Assignments", pane: "mm-lines", z: 420 },
    { id: "organizations", label: "Organizations", pane: "mm-partners", z: 430 },
    { id: "volunteers", label: "Volunteers (coarsened ~500 m)", pane: "mm-partners", z: 430 },
    { id: "recruit", label: "Recruit sites", pane: "mm-recruit", z: 625, optional: true }
  ];
  var RECRUIT_RADIUS_PANE = "mm-recruit-radius";

  var state = {
    key: null,
    role: null,
    plan: null, // the plan record (with summary) shown
    data: null, // features by layer and lookups
    categories: [], // categories of the shown plan, sorted
    catFilter: null, // Set of shown categories (null: all)
    kindFilter: new Set(["organization", "volunteer"]),
    visible: {},
    selected: null,
    watching: {},
    fitted: false
  };
  var groups = {};

  function $(id) { return document.getElementById(id); }

  var h = window.matcherWeb.h;

  function fmt(x, digits) {
    if (x === null || x === undefined || Number.isNaN(x)) return "–";
    var d = digits === undefined ? 1 : digits;
    return Number(x).toLocaleString("en-US", { maximumFractionDigits: d });
  }

  function pct(x) { return x === null || x === undefined ? "–" : fmt(100 * x, 1) + "%"; }

  function shortId(id) { return id ? String(id).slice(0, 8) : ""; }

  function categoryColor(cat) {
    if (CATEGORY_COLORS[cat]) return CATEGORY_COLORS[cat];
    var i = state.categories.indexOf(cat);
    return EXTRA_COLORS[(i < 0 ? 0 : i) % EXTRA_COLORS.length];
  }

  function coverageColor(cov) {
    if (cov === null || cov === undefined) return NO_DEMAND;
    for (var i = 0; i < COVERAGE_CLASSES.length; i++) {
      if (cov < COVERAGE_CLASSES[i][0]) return COVERAGE_CLASSES[i][1];
    }
    return COVERAGE_CLASSES[COVERAGE_CLASSES.length - 1][1];
  }

  function reasonText(code) { return REASONS[code] || code || ""; }

  function gapColor(unmet) {
    var max = state.data ? state.data.maxGap : 0;
    if (!(unmet > 0) || !(max > 0)) return NO_GAP;
    var i = Math.min(GAP_COLORS.length - 1, Math.floor(GAP_COLORS.length * unmet / max - 1e-9));
    return GAP_COLORS[Math.max(0, i)];
  }

  function partnerCategories(p) {
    var c = p.categories;
    if (Array.isArray(c)) return c;
    return String(c || "").split(";").filter(Boolean);
  }

  function setMessage(text, isError) {
    var m = $("message");
    m.textContent = text || "";
    m.hidden = !text;
    m.classList.toggle("error", !!isError);
  }

  function setPlanStatus(text, isError) {
    var s = $("plan-status");
    s.textContent = text || "";
    s.classList.toggle("error", !!isError);
  }

  // ------------------------------------------------------------------ API

  function api(path, options) {
    var opts = options || {};
    var headers = { Accept: "application/json" };
    Object.keys(opts.headers || {}).forEach(function (k) { headers[k] = opts.headers[k]; });
    if (state.key) headers.Authorization = "Bearer " + state.key;
    return fetch(API + path, {
      method: opts.method || "GET",
      headers: headers,
      body: opts.body,
      cache: "no-store",
      credentials: "omit"
    }).then(function (resp) {
      return resp.text().then(function (text) {
        var body = null;
        if (text) {
          try { body = JSON.parse(text); } catch (e) { body = null; }
        }
        if (!resp.ok) {
          var err = new Error((body && (body.detail || body.title)) || resp.status + " " + resp.statusText);
          err.status = resp.status;
          throw err;
        }
        return body;
      });
    });
  }

  // ------------------------------------------------------------------ map

  var map = L.map("map", { zoomControl: true, worldCopyJump: true }).setView([20, 0], 2);
  LAYERS.forEach(function (spec) {
    if (!map.getPane(spec.pane)) map.createPane(spec.pane).style.zIndex = String(spec.z);
  });
  map.createPane(RECRUIT_RADIUS_PANE).style.zIndex = "415";
  L.control.scale({ imperial: false }).addTo(map);

  function addBaseMap(cfg) {
    window.matcherWeb.addBaseMap(map, cfg, $("base-status"), {
      none: "No base map is configured: the layers are drawn on a blank background.",
      unavailable: "Base map unavailable (its tiles cannot be reached); every layer is still shown."
    });
  }

  function tooltip(lines) {
    var box = h("div", { className: "mm-tooltip" });
    lines.forEach(function (line, i) {
      if (i) box.appendChild(document.createElement("br"));
      box.appendChild(i === 0 ? h("strong", { text: line }) : document.createTextNode(line));
    });
    return box;
  }

  function paneOf(id) {
    for (var i = 0; i < LAYERS.length; i++) if (LAYERS[i].id === id) return LAYERS[i].pane;
    return "overlayPane";
  }

  function clusterStyle(f) {
    var p = f.properties;
    var max = state.data ? state.data.maxDemand : 1;
    var share = max > 0 ? Math.sqrt(p.demand / max) : 0;
    var selected = state.selected === p.cluster_id;
    return {
      color: selected ? "#000" : categoryColor(p.category),
      weight: selected ? 3 : 1,
      opacity: 0.9,
      fillColor: categoryColor(p.category),
      fillOpacity: 0.15 + 0.6 * share
    };
  }

  // Tooltips and clicks are bound once per layer group (Leaflet hands the group the feature's
  // layer), and tooltip contents are built only when one opens: thousands of features stay fast.
  function neighborhoodTip(p) {
    var lines = [p.name + " (" + p.neighborhood_id + ")"];
    if (p.coverage === null || p.coverage === undefined) lines.push("no demand in this plan");
    else {
      lines.push("coverage " + pct(p.coverage) + ": served " + fmt(p.served) + " of " +
        fmt(p.demand) + " units, unmet " + fmt(p.unmet));
    }
    if (p.population) lines.push("population " + fmt(p.population, 0));
    return lines;
  }

  function gapTip(p) {
    return [
      p.name + " (" + p.neighborhood_id + ")",
      "unmet " + fmt(p.unmet) + " of " + fmt(p.demand) + " units (coverage " + pct(p.coverage) +
        "); click for the gaps by category"
    ];
  }

  // the popup of a gap polygon: totals, unmet by reason and one row per category
  function gapPopup(p) {
    var box = h("div", { className: "gap-popup", "data-neighborhood": p.neighborhood_id });
    box.appendChild(h("strong", { text: p.name + " (" + p.neighborhood_id + ")" }));
    box.appendChild(h("p", { text: "demand " + fmt(p.demand) + ", served " + fmt(p.served) +
      " (" + pct(p.coverage) + "), unmet " + fmt(p.unmet) + " units" }));
    box.appendChild(h("p", { className: "unmet-reason", text: "unmet: " +
      fmt(p.unmet_no_partner_in_range) + " with no partner in range (no_partner_in_range), " +
      fmt(p.unmet_partners_in_range_full) + " with every partner in range full " +
      "(partners_in_range_full)" }));
    var cats = p.categories || {};
    var names = Object.keys(cats).sort(function (a, b) {
      return (cats[b].unmet - cats[a].unmet) || (a < b ? -1 : 1);
    });
    if (!names.length) {
      box.appendChild(h("p", { text: "No demand here in this plan." }));
      return box;
    }
    var body = h("tbody");
    names.forEach(function (cat) {
      var c = cats[cat];
      body.appendChild(h("tr", { "data-category": cat }, h("td", { text: cat }),
        h("td", { text: fmt(c.demand) }), h("td", { text: fmt(c.served) }),
        h("td", { text: fmt(c.unmet) }), h("td", { text: fmt(c.unmet_no_partner_in_range) }),
        h("td", { text: fmt(c.unmet_partners_in_range_full) })));
    });
    box.appendChild(h("table", { className: "small-table gap-table" },
      h("thead", null, h("tr", null, h("th", { text: "category" }), h("th", { text: "demand" }),
        h("th", { text: "served" }), h("th", { text: "unmet" }),
        h("th", { text: "no partner", title: "no_partner_in_range" }),
        h("th", { text: "full", title: "partners_in_range_full" }))), body));
    return box;
  }

  function recruitTip(p) {
    return [
      "Recruit site #" + p.rank + " for " + p.category,
      "a new partner here would serve " + fmt(p.covered_units) + " unmet units in " +
        fmt(p.clusters_covered, 0) + " cluster(s) (" + fmt(p.units_in_range) +
        " unmet units within reach)",
      "radius " + fmt(p.radius_km, 2) + " km, capacity " +
        (p.capacity === null || p.capacity === undefined ? "unlimited" : fmt(p.capacity)),
      "at cluster " + p.site_cluster_id + " (click to show it)"
    ];
  }

  function clusterTip(p) {
    return [
      p.cluster_id,
      p.category + ": " + p.n_needs + " need(s), demand " + fmt(p.demand) + ", served " +
        fmt(p.served) + (p.unmet > 0 ? ", unmet " + fmt(p.unmet) : "")
    ];
  }

  function unmetTip(p) {
    return [
      p.cluster_id + ": unmet " + fmt(p.unmet) + " of " + fmt(p.demand) + " units",
      reasonText(p.unmet_reason)
    ];
  }

  function assignmentTip(p) {
    var partner = state.data.partners[p.partner_id];
    return [
      (partner ? partner.name : p.partner_id) + " → " + p.cluster_id,
      fmt(p.units) + " units, " + fmt(p.distance_km, 2) + " km"
    ];
  }

  function partnerTip(p) {
    var lines = [
      p.name || p.partner_id,
      p.partner_id + " · " + p.kind + " · " + partnerCategories(p).join(", "),
      "capacity " + fmt(p.capacity) + ", used " + fmt(p.used) + ", radius " +
        fmt(p.radius_km) + " km"
    ];
    if (p.coarsened) lines.push("location coarsened to a ~500 m grid");
    return lines;
  }

  // the attribute that names each feature's SVG element (tests and assistive tools use it)
  var ID_OF = {
    neighborhoods: function (p) { return p.neighborhood_id; },
    gaps: function (p) { return p.neighborhood_id; },
    recruit: function (p) { return p.category + "#" + p.rank; },
    clusters: function (p) { return p.cluster_id; },
    unmet: function (p) { return p.cluster_id; },
    assignments: function (p) { return p.cluster_id + "|" + p.partner_id; },
    organizations: function (p) { return p.partner_id; },
    volunteers: function (p) { return p.partner_id; }
  };

  function bindGroup(id, tip, clickable) {
    var group = groups[id];
    group.bindTooltip(function (layer) { return tooltip(tip(layer.feature.properties)); },
      { sticky: id !== "organizations" && id !== "volunteers" && id !== "recruit" });
    if (clickable) {
      group.on("click", function (e) {
        if (e.layer && e.layer.feature) selectCluster(e.layer.feature.properties.cluster_id);
      });
    }
  }

  function buildGroups() {
    groups.neighborhoods = L.geoJSON(null, {
      pane: paneOf("neighborhoods"),
      className: "mm-neighborhood",
      style: function (f) {
        return {
          color: "#52606d",
          weight: 1,
          opacity: 0.7,
          fillColor: coverageColor(f.properties.coverage),
          fillOpacity: 0.35
        };
      }
    });
    groups.clusters = L.geoJSON(null, {
      pane: paneOf("clusters"),
      className: "mm-cluster",
      style: clusterStyle
    });
    groups.unmet = L.geoJSON(null, {
      pane: paneOf("unmet"),
      className: "mm-unmet",
      style: function () {
        return { color: "#b71c1c", weight: 3, dashArray: "6 4", opacity: 1, fillOpacity: 0 };
      }
    });
    groups.assignments = L.geoJSON(null, {
      pane: paneOf("assignments"),
      className: "mm-assignment",
      style: function (f) {
        var u = Number(f.properties.units) || 0;
        return { color: "#263238", opacity: 0.65, weight: Math.min(12, 1 + 1.5 * Math.sqrt(u)) };
      }
    });
    ["organizations", "volunteers"].forEach(function (id) {
      var volunteer = id === "volunteers";
      groups[id] = L.geoJSON(null, {
        pane: paneOf(id),
        pointToLayer: function (f, latlng) {
          return L.circleMarker(latlng, {
            pane: paneOf(id),
            className: volunteer ? "mm-partner mm-volunteer" : "mm-partner mm-organization",
            radius: volunteer ? 4 : 5,
            color: "#fff",
            weight: 1,
            fillColor: volunteer ? "#8e24aa" : "#1565c0",
            fillOpacity: 0.9
          });
        }
      });
    });
    groups.gaps = L.geoJSON(null, {
      pane: paneOf("gaps"),
      className: "mm-gap",
      style: function (f) {
        return {
          color: "#7f2704",
          weight: 1,
          opacity: 0.8,
          fillColor: gapColor(f.properties.unmet),
          fillOpacity: 0.55
        };
      }
    });
    groups.gaps.bindPopup(function (layer) { return gapPopup(layer.feature.properties); },
      { maxWidth: 420, className: "mm-gap-popup" });
    groups.recruit = L.geoJSON(null, {
      pane: paneOf("recruit"),
      pointToLayer: function (f, latlng) {
        var p = f.properties;
        var badge = h("span", { className: "rank", text: String(p.rank),
          style: "background:" + categoryColor(p.category) });
        return L.marker(latlng, {
          pane: paneOf("recruit"),
          keyboard: false,
          icon: L.divIcon({ className: "mm-recruit", html: badge, iconSize: [22, 22] })
        });
      }
    });
    groups.recruit.on("click", function (e) {
      if (e.layer && e.layer.feature) selectCluster(e.layer.feature.properties.site_cluster_id);
    });
    groups.recruitRadius = L.layerGroup();
    bindGroup("neighborhoods", neighborhoodTip, false);
    bindGroup("gaps", gapTip, false);
    bindGroup("recruit", recruitTip, false);
    bindGroup("clusters", clusterTip, true);
    bindGroup("unmet", unmetTip, true);
    bindGroup("assignments", assignmentTip, true);
    bindGroup("organizations", partnerTip, false);
    bindGroup("volunteers", partnerTip, false);
  }

  function tagElements(id) {
    var idOf = ID_OF[id];
    groups[id].eachLayer(function (layer) {
      var el = layer.getElement && layer.getElement();
      if (el) el.setAttribute("data-id", idOf(layer.feature.properties));
    });
  }

  // ------------------------------------------------------------------ data and rendering

  function indexPlan(collection) {
    var data = {
      neighborhoods: [], clusters: [], assignments: [], partnersList: [], gaps: [], recruit: [],
      partners: {}, clustersById: {}, byCluster: {}, maxDemand: 0, maxGap: 0,
      floors: collection.floors || null
    };
    collection.features.forEach(function (f) {
      var p = f.properties;
      switch (p.feature_type) {
        case "neighborhood": data.neighborhoods.push(f); break;
        case "cluster":
          data.clusters.push(f);
          data.clustersById[p.cluster_id] = f;
          data.maxDemand = Math.max(data.maxDemand, Number(p.demand) || 0);
          break;
        case "partner":
          data.partnersList.push(f);
          data.partners[p.partner_id] = p;
          break;
        case "assignment":
          data.assignments.push(f);
          (data.byCluster[p.cluster_id] = data.byCluster[p.cluster_id] || []).push(p);
          break;
        case "gap":
          data.gaps.push(f);
          data.maxGap = Math.max(data.maxGap, Number(p.unmet) || 0);
          break;
        case "recruit_site": data.recruit.push(f); break;
        default: break;
      }
    });
    Object.keys(data.byCluster).forEach(function (id) {
      data.byCluster[id].sort(function (a, b) {
        return (b.units - a.units) || (a.distance_km - b.distance_km);
      });
    });
    return data;
  }

  function catShown(cat) { return state.catFilter === null || state.catFilter.has(cat); }

  function filtered(id) {
    var d = state.data;
    if (!d) return [];
    switch (id) {
      case "neighborhoods": return d.neighborhoods;
      case "gaps": return d.gaps;
      case "recruit":
        return d.recruit.filter(function (f) { return catShown(f.properties.category); });
      case "clusters":
        return d.clusters.filter(function (f) { return catShown(f.properties.category); });
      case "unmet":
        return d.clusters.filter(function (f) {
          return f.properties.unmet > 0 && catShown(f.properties.category);
        });
      case "assignments":
        return d.assignments.filter(function (f) {
          var c = d.clustersById[f.properties.cluster_id];
          var p = d.partners[f.properties.partner_id];
          return (!c || catShown(c.properties.category)) && (!p || state.kindFilter.has(p.kind));
        });
      case "organizations":
      case "volunteers": {
        var kind = id === "organizations" ? "organization" : "volunteer";
        if (!state.kindFilter.has(kind)) return [];
        return d.partnersList.filter(function (f) {
          return f.properties.kind === kind && partnerCategories(f.properties).some(catShown);
        });
      }
      default: return [];
    }
  }

  function showGroup(id) {
    var group = groups[id];
    if (state.visible[id] && !map.hasLayer(group)) {
      group.addTo(map);
      tagElements(id);
    }
    if (!state.visible[id] && map.hasLayer(group)) map.removeLayer(group);
    if (id === "recruit") {
      var radius = groups.recruitRadius;
      if (state.visible[id] && !map.hasLayer(radius)) radius.addTo(map);
      if (!state.visible[id] && map.hasLayer(radius)) map.removeLayer(radius);
    }
    if (id === "gaps" || id === "neighborhoods") {
      $("coverage-legend").hidden = !state.visible.neighborhoods;
      $("gap-legend").hidden = !state.visible.gaps || !(state.data && state.data.gaps.length);
    }
  }

  // a circle of each shown recruit site's radius (drawn under the clusters' outlines)
  function drawRecruitRadius(features) {
    var radius = groups.recruitRadius;
    radius.clearLayers();
    features.forEach(function (f) {
      var p = f.properties;
      var c = f.geometry.coordinates;
      L.circle([c[1], c[0]], {
        pane: RECRUIT_RADIUS_PANE,
        className: "mm-recruit-radius",
        interactive: false,
        radius: 1000 * Number(p.radius_km),
        color: categoryColor(p.category),
        weight: 2,
        dashArray: "4 4",
        fillOpacity: 0.06
      }).addTo(radius);
    });
  }

  function renderGapLegend() {
    var legend = $("gap-legend");
    legend.textContent = "";
    var max = state.data ? state.data.maxGap : 0;
    legend.appendChild(h("div", { text: "Gaps: unmet units per neighborhood:" }));
    legend.appendChild(h("span", { className: "item" },
      h("span", { className: "swatch", style: "background:" + NO_GAP }), "none"));
    GAP_COLORS.forEach(function (color, i) {
      var lo = max * i / GAP_COLORS.length;
      var hi = max * (i + 1) / GAP_COLORS.length;
      legend.appendChild(h("span", { className: "item" },
        h("span", { className: "swatch", style: "background:" + color }),
        fmt(lo, 0) + "–" + fmt(hi, 0)));
    });
  }

  function setVisible(id, on) {
    state.visible[id] = on;
    var box = document.querySelector('input[data-layer="' + id + '"]');
    if (box) box.checked = on;
    showGroup(id);
  }

  // Rebuild the layers ``ids`` (default: all) from the data and the filters.
  function render(ids) {
    LAYERS.forEach(function (spec) {
      if (ids && ids.indexOf(spec.id) < 0) return;
      var group = groups[spec.id];
      var features = filtered(spec.id);
      group.clearLayers();
      group.addData(features);
      if (map.hasLayer(group)) tagElements(spec.id);
      if (spec.id === "recruit") drawRecruitRadius(features);
      if (spec.id === "gaps") renderGapLegend();
      var count = document.querySelector('[data-count="' + spec.id + '"]');
      if (count) count.textContent = String(features.length);
      if (spec.optional) {
        var item = document.querySelector('#layer-list li[data-layer-item="' + spec.id + '"]');
        var has = !!(state.data && state.data[spec.id] && state.data[spec.id].length);
        if (item) item.hidden = !has;
      }
      showGroup(spec.id);
    });
  }

  var BY_CATEGORY = ["clusters", "unmet", "assignments", "organizations", "volunteers", "recruit"];
  var BY_KIND = ["assignments", "organizations", "volunteers"];

  function buildLayerList() {
    var list = $("layer-list");
    list.textContent = "";
    LAYERS.forEach(function (spec) {
      if (!(spec.id in state.visible)) state.visible[spec.id] = !spec.off;
      var box = h("input", { type: "checkbox", "data-layer": spec.id });
      box.checked = state.visible[spec.id];
      box.addEventListener("change", function () {
        state.visible[spec.id] = box.checked;
        showGroup(spec.id);
        // the coverage and gap choropleths share the neighborhood polygons: one at a time
        LAYERS.forEach(function (other) {
          if (!box.checked) return;
          if (other.excludes === spec.id || spec.excludes === other.id) setVisible(other.id, false);
        });
      });
      var attrs = { "data-layer-item": spec.id };
      if (spec.optional) attrs.hidden = "hidden";
      list.appendChild(h("li", attrs, h("label", null, box, " ",
        h("span", { className: "key key-" + spec.id, "aria-hidden": "true" }), spec.label + " "),
        h("span", { className: "count", "data-count": spec.id, text: "0" })));
    });
    var legend = $("coverage-legend");
    legend.textContent = "";
    legend.appendChild(h("div", { text: "Neighborhood coverage (units served / demanded):" }));
    COVERAGE_CLASSES.forEach(function (c) {
      legend.appendChild(h("span", { className: "item" },
        h("span", { className: "swatch", style: "background:" + c[1] }), c[2]));
    });
    legend.appendChild(h("span", { className: "item" },
      h("span", { className: "swatch", style: "background:" + NO_DEMAND }), "no demand"));
  }

  function buildCategoryFilter() {
    var box = $("category-filter");
    box.textContent = "";
    state.categories.forEach(function (cat) {
      var input = h("input", { type: "checkbox", name: "category", value: cat });
      input.checked = catShown(cat);
      input.addEventListener("change", function () {
        var shown = state.catFilter === null ? new Set(state.categories) : state.catFilter;
        if (input.checked) shown.add(cat); else shown.delete(cat);
        state.catFilter = shown.size === state.categories.length ? null : shown;
        render(BY_CATEGORY);
      });
      box.appendChild(h("label", null, input, " ",
        h("span", { className: "swatch", style: "background:" + categoryColor(cat) }), cat));
    });
  }

  function setAllCategories(on) {
    state.catFilter = on ? null : new Set();
    document.querySelectorAll('#category-filter input[name="category"]').forEach(function (i) {
      i.checked = on;
    });
    render(BY_CATEGORY);
  }

  function fact(dl, label, value, className) {
    dl.appendChild(h("dt", { text: label }));
    dl.appendChild(h("dd", className ? { className: className, text: value } : { text: value }));
  }

  function renderMetrics() {
    var rec = state.plan;
    var summary = rec.summary || {};
    var m = summary.metrics || {};
    var units = m.units || {};
    var counts = m.counts || {};
    var params = summary.parameters || rec.parameters || {};
    $("plan-id").textContent = shortId(rec.plan_id);
    $("plan-id").title = rec.plan_id;
    var dl = $("plan-metrics");
    dl.textContent = "";
    fact(dl, "finished", rec.finished_at
      ? String(rec.finished_at).replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC") : "–");
    fact(dl, "objective", (params.objective || "–") + ", cluster " + fmt(params.cluster_km, 2) +
      " km, seed " + (params.seed === undefined ? "–" : params.seed));
    fact(dl, "units demanded", fmt(units.demand));
    fact(dl, "units served", fmt(units.served) + " (" + pct(units.coverage) + ")");
    fact(dl, "units unmet", fmt(units.unmet));
    var byReason = m.unmet_by_reason || {};
    Object.keys(byReason).sort().forEach(function (r) {
      fact(dl, "unmet because", fmt(byReason[r]) + " units: " + reasonText(r) + " (" + r + ")",
        "unmet-reason");
    });
    fact(dl, "clusters", fmt(counts.clusters, 0) + " (" + fmt(counts.clusters_fully_served, 0) +
      " fully served)");
    fact(dl, "needs", fmt(counts.needs, 0));
    fact(dl, "assignments", fmt(counts.assignments, 0));
    var dist = m.distance_per_unit_km || {};
    fact(dl, "km per unit", "mean " + fmt(dist.mean, 2) + ", p90 " + fmt(dist.p90, 2));
    var eq = m.equity || {};
    if (eq.neighborhoods) {
      fact(dl, "neighborhood coverage", pct(eq.coverage_min) + " to " + pct(eq.coverage_max) +
        " over " + eq.neighborhoods + " (Gini " + fmt(eq.coverage_gini, 3) + ")");
    }
    renderFloors(dl, m.floors, params);
    var recruit = summary.recruit_parameters;
    if (recruit) {
      var nSites = state.data ? state.data.recruit.length : 0;
      fact(dl, "recruit sites", fmt(nSites, 0) + " suggested (up to " + recruit.k +
        " per category, radius " + fmt(recruit.radius_km, 2) + " km, capacity " +
        (recruit.capacity === null || recruit.capacity === undefined ? "unlimited"
          : fmt(recruit.capacity)) + ")");
    }
    renderScenario(summary.scenario);
    var tbody = document.querySelector("#category-table tbody");
    tbody.textContent = "";
    var byCat = m.units_by_category || {};
    Object.keys(byCat).sort().forEach(function (cat) {
      var u = byCat[cat];
      tbody.appendChild(h("tr", null, h("td", { text: cat }), h("td", { text: fmt(u.demand) }),
        h("td", { text: fmt(u.served) }), h("td", { text: pct(u.coverage) })));
    });
  }

  // equity floors: the count met, each floor not met with its reason, and a table of all
  function renderFloors(dl, counts, params) {
    var rows = (state.data && state.data.floors) || [];
    var details = $("floors-details");
    var tbody = document.querySelector("#floors-table tbody");
    tbody.textContent = "";
    details.hidden = !rows.length;
    if (!counts && !rows.length) return;
    var n = counts ? counts.neighborhoods : rows.length;
    var met = counts ? counts.met : rows.filter(function (r) { return r.floor_met; }).length;
    fact(dl, "equity floors", met + " of " + n + " neighborhoods met their floor (min coverage " +
      pct(params.min_coverage) + ")" + (counts && counts.shortfall_units > 0
        ? "; short by " + fmt(counts.shortfall_units) + " units" : ""),
      met < n ? "floors-summary unmet-reason" : "floors-summary");
    rows.forEach(function (r) {
      if (!r.floor_met) {
        fact(dl, "floor not met", (r.name || r.neighborhood_id) + " (" + r.neighborhood_id +
          "): served " + fmt(r.served) + " of a floor of " + fmt(r.floor) + " units (" +
          pct(r.coverage) + " of " + fmt(r.demand) + "). " + (r.reason || ""),
          "floor-not-met unmet-reason");
      }
      tbody.appendChild(h("tr", { className: r.floor_met ? "met" : "not-met" },
        h("td", { text: (r.name || r.neighborhood_id) + " (" + r.neighborhood_id + ")" }),
        h("td", { text: fmt(r.floor) }), h("td", { text: fmt(r.served) }),
        h("td", { text: pct(r.coverage) }), h("td", { text: r.floor_met ? "yes" : "no" })));
    });
  }

  // a what-if scenario: its base plan and the headline changes
  function renderScenario(sc) {
    var box = $("plan-scenario");
    box.textContent = "";
    box.hidden = !sc;
    if (!sc) return;
    var d = (sc.metrics || {}).delta || {};
    var c = sc.change || {};
    var parts = [];
    if (c.remove_partners && c.remove_partners.length) {
      parts.push("without " + c.remove_partners.join(", "));
    }
    if (c.add_partners && c.add_partners.length) parts.push("with " + c.add_partners.join(", "));
    if (c.scale_capacity !== null && c.scale_capacity !== undefined) {
      parts.push("capacity × " + fmt(c.scale_capacity, 3));
    }
    if (c.radius_km !== null && c.radius_km !== undefined) {
      parts.push("radius " + fmt(c.radius_km, 2) + " km");
    }
    box.appendChild(document.createTextNode("What-if scenario of plan " +
      shortId(sc.base_plan) + (parts.length ? " (" + parts.join("; ") + ")" : " (no change)") +
      ": units served " + (d.units_served >= 0 ? "+" : "") + fmt(d.units_served) + ", " +
      fmt(sc.clusters_changed, 0) + " cluster(s) changed." +
      (sc.data_changed ? " The stored data changed since the base plan." : "")));
  }

  function selectCluster(clusterId) {
    var d = state.data;
    var f = d && d.clustersById[clusterId];
    if (!f) return;
    state.selected = clusterId;
    groups.clusters.setStyle(clusterStyle);
    var p = f.properties;
    var panel = $("cluster-panel");
    $("cluster-id").textContent = p.cluster_id;
    var dl = $("cluster-facts");
    dl.textContent = "";
    fact(dl, "category", p.category);
    fact(dl, "needs", fmt(p.n_needs, 0));
    fact(dl, "demand", fmt(p.demand) + " units/week, severity " + fmt(p.severity, 2));
    fact(dl, "served", fmt(p.served) + " units");
    if (p.unmet > 0) {
      fact(dl, "unmet", fmt(p.unmet) + " units: " + reasonText(p.unmet_reason) +
        " (" + p.unmet_reason + ")", "unmet-reason");
    }
    var list = $("cluster-recs");
    list.textContent = "";
    var recs = d.byCluster[clusterId] || [];
    if (!recs.length) {
      list.appendChild(h("li", { className: "rec none", text: "No partner recommended" +
        (p.unmet_reason ? ": " + reasonText(p.unmet_reason) + "." : ".") }));
    }
    recs.forEach(function (a) {
      var partner = d.partners[a.partner_id] || {};
      var head = h("div", null,
        h("strong", { text: partner.name || a.partner_id }),
        " (" + a.partner_id + ", " + (partner.kind || "partner") + "): " + fmt(a.units) +
          " units, " + fmt(a.distance_km, 2) + " km, cost " + fmt(a.cost, 3) + " (units × cost per unit)");
      var runner;
      if (a.runner_up_id) {
        var ru = d.partners[a.runner_up_id] || {};
        runner = "Runner-up: " + (ru.name ? ru.name + " (" + a.runner_up_id + ")" : a.runner_up_id) +
          (a.runner_up_distance_km !== null && a.runner_up_distance_km !== undefined
            ? ", " + fmt(a.runner_up_distance_km, 2) + " km" : "") +
          (a.runner_up_extra_cost !== null && a.runner_up_extra_cost !== undefined
            ? ", " + (a.runner_up_extra_cost >= 0 ? "+" : "") + fmt(a.runner_up_extra_cost, 3) +
              " per unit" : "") +
          (a.runner_up_full ? " (no capacity left)" : "");
      } else {
        runner = "No runner-up: no other eligible partner.";
      }
      list.appendChild(h("li", { className: "rec", "data-partner": a.partner_id }, head,
        h("p", { className: "explanation", text: a.reason || "" }),
        h("p", { className: "runner-up", text: runner })));
    });
    panel.hidden = false;
    panel.scrollIntoView({ block: "nearest" });
  }

  function closeCluster() {
    state.selected = null;
    $("cluster-panel").hidden = true;
    if (state.data) groups.clusters.setStyle(clusterStyle);
  }

  function showPlan(rec, collection) {
    state.plan = rec;
    state.data = indexPlan(collection);
    var cats = new Set();
    state.data.clusters.forEach(function (f) { cats.add(f.properties.category); });
    state.data.partnersList.forEach(function (f) {
      partnerCategories(f.properties).forEach(function (c) { cats.add(c); });
    });
    state.categories = Array.from(cats).sort();
    if (state.catFilter !== null) {
      state.catFilter = new Set(Array.from(state.catFilter).filter(function (c) { return cats.has(c); }));
    }
    if (state.selected && !state.data.clustersById[state.selected]) closeCluster();
    buildCategoryFilter();
    render();
    renderMetrics();
    renderFiles(rec);
    if (state.selected) selectCluster(state.selected);
    ["metrics-panel", "layers-panel", "filters-panel"].forEach(function (id) { $(id).hidden = false; });
    if (!state.fitted) {
      var bounds = L.latLngBounds([]);
      state.data.clusters.concat(state.data.partnersList).forEach(function (f) {
        var g = f.geometry;
        if (g.type === "Point") bounds.extend([g.coordinates[1], g.coordinates[0]]);
        else if (f.properties.centroid_lat !== undefined) {
          bounds.extend([f.properties.centroid_lat, f.properties.centroid_lon]);
        }
      });
      if (bounds.isValid()) {
        map.fitBounds(bounds, { padding: [20, 20] });
        state.fitted = true;
      }
    }
    document.body.dataset.planId = rec.plan_id;
    document.body.dataset.state = "ready";
  }

  // the shown plan's files, downloaded with the key (a plain link cannot send it)
  function renderFiles(rec) {
    var list = $("plan-files");
    list.textContent = "";
    $("files-status").textContent = "";
    return api("plans/" + encodeURIComponent(rec.plan_id)).then(function (full) {
      if (!state.plan || state.plan.plan_id !== rec.plan_id) return;
      Object.keys(full.files || {}).forEach(function (name) {
        var button = h("button", { type: "button", className: "link", "data-file": name,
          text: name });
        button.addEventListener("click", function () { downloadFile(rec.plan_id, name); });
        list.appendChild(h("li", null, button));
      });
    });
  }

  function downloadFile(planId, name) {
    $("files-status").textContent = "Downloading " + name + "…";
    fetch(API + "plans/" + encodeURIComponent(planId) + "/files/" + encodeURIComponent(name), {
      headers: { Authorization: "Bearer " + state.key }, cache: "no-store", credentials: "omit"
    }).then(function (resp) {
      if (!resp.ok) throw new Error(resp.status + " " + resp.statusText);
      return resp.blob();
    }).then(function (blob) {
      var url = URL.createObjectURL(blob);
      var a = h("a", { href: url, download: "plan-" + shortId(planId) + "-" + name });
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
      $("files-status").textContent = "";
    }).catch(function (err) {
      $("files-status").textContent = "Could not download " + name + ": " + err.message;
    });
  }

  function loadPlan(rec) {
    document.body.dataset.state = "loading";
    return api("plans/" + encodeURIComponent(rec.plan_id) + "/map").then(function (collection) {
      showPlan(rec, collection);
    });
  }

  function watchPlan(planId, replaced) {
    if (state.watching[planId]) return state.watching[planId];
    var started = Date.now();
    var p = new Promise(function (resolve, reject) {
      function poll() {
        api("plans/" + encodeURIComponent(planId)).then(function (rec) {
          if (rec.status === "done") {
            setPlanStatus("Plan " + shortId(planId) + " is done; loading it…");
            return loadPlan(rec).then(function () {
              setPlanStatus("Plan " + shortId(planId) + " is shown" +
                (replaced && replaced !== planId ? " (it replaced plan " + shortId(replaced) + ")." : "."));
              resolve(rec);
            });
          }
          if (rec.status === "failed") {
            setPlanStatus("Plan " + shortId(planId) + " failed: " + (rec.error || "unknown error"), true);
            resolve(rec);
            return undefined;
          }
          if (Date.now() - started > POLL_LIMIT_MS) {
            setPlanStatus("Plan " + shortId(planId) + " is still " + rec.status +
              "; reload the page later.", true);
            resolve(rec);
            return undefined;
          }
          setPlanStatus("Plan " + shortId(planId) + " is " + rec.status + "…");
          setTimeout(poll, POLL_MS);
          return undefined;
        }).catch(reject);
      }
      poll();
    });
    state.watching[planId] = p;
    p.then(function () { delete state.watching[planId]; }, function (err) {
      delete state.watching[planId];
      setPlanStatus("Could not follow plan " + shortId(planId) + ": " + err.message, true);
    });
    return p;
  }

  function requestedPlan() {
    var m = /(?:^#|&)plan=([0-9a-fA-F]{8,64})(?:&|$)/.exec(window.location.hash || "");
    return m ? m[1] : null;
  }

  // "#plan=<id>": show that plan (a scenario, an older plan) instead of the latest
  function loadRequested(planId) {
    setMessage("Loading plan " + shortId(planId) + "…");
    return api("plans/" + encodeURIComponent(planId)).then(function (rec) {
      if (rec.status === "done") {
        return loadPlan(rec).then(function () { setMessage(""); });
      }
      setMessage("Plan " + shortId(planId) + " is " + rec.status + "; it is shown when done.");
      document.body.dataset.state = "no-plan";
      return watchPlan(planId, null);
    });
  }

  function loadLatest() {
    var wanted = requestedPlan();
    if (wanted) return loadRequested(wanted);
    setMessage("Loading the latest plan…");
    return api("plans/latest").then(function (body) {
      var pending = body.pending || [];
      var after = body.plan ? loadPlan(body.plan) : Promise.resolve();
      return after.then(function () {
        if (body.plan) setMessage("");
        else {
          setMessage(pending.length ? "The first plan is running; the map appears when it is done."
            : (canPlan() ? "No plan yet: start one under “New plan”." :
              "No plan yet: a planner has to run one."));
          document.body.dataset.state = "no-plan";
        }
        pending.forEach(function (p) {
          watchPlan(p.plan_id, state.plan && state.plan.plan_id);
        });
      });
    });
  }

  function canPlan() { return state.role === "planner" || state.role === "admin"; }

  function runPlan(event) {
    event.preventDefault();
    var body = {
      objective: $("plan-objective").value,
      cluster_km: Number($("plan-cluster-km").value),
      seed: Number($("plan-seed").value)
    };
    if (!(body.cluster_km > 0) || !(body.seed >= 0) || Math.floor(body.seed) !== body.seed) {
      setPlanStatus("Cluster distance must be > 0 km and the seed a whole number ≥ 0.", true);
      return;
    }
    var floor = $("plan-min-coverage").value.trim();
    if (floor !== "") {
      body.min_coverage = Number(floor);
      if (!(body.min_coverage >= 0 && body.min_coverage <= 1)) {
        setPlanStatus("The minimum coverage must be a number from 0 to 1.", true);
        return;
      }
    }
    var k = $("plan-recruit-k").value.trim();
    if (k !== "") {
      body.recruit_k = Number(k);
      body.recruit_radius_km = Number($("plan-recruit-radius").value);
      if (!(body.recruit_k >= 1) || Math.floor(body.recruit_k) !== body.recruit_k ||
          !(body.recruit_radius_km > 0)) {
        setPlanStatus("Recruit sites must be a whole number ≥ 1 and the radius > 0 km.", true);
        return;
      }
    }
    var button = $("plan-run");
    button.disabled = true;
    var replaced = state.plan && state.plan.plan_id;
    setPlanStatus("Starting a plan…");
    api("plans", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (created) {
      setPlanStatus("Plan " + shortId(created.plan_id) + " is queued…");
      return watchPlan(created.plan_id, replaced);
    }).catch(function (err) {
      setPlanStatus("Could not start a plan: " + err.message, true);
    }).then(function () { button.disabled = !canPlan(); });
  }

  // ------------------------------------------------------------------ key handling

  function setKeyStatus(text, ok) {
    var s = $("key-status");
    s.textContent = text;
    s.className = "key-status " + (ok ? "ok" : "bad");
  }

  function useKey(key) {
    state.key = key;
    return api("me").then(function (me) {
      state.role = me.role;
      try { sessionStorage.setItem(KEY_STORE, key); } catch (e) { /* storage disabled */ }
      setKeyStatus("signed in as " + me.role, true);
      $("key-input").value = "";
      $("key-forget").hidden = false;
      $("run-panel").hidden = false;
      $("plan-run").disabled = !canPlan();
      if (!canPlan()) setPlanStatus("Running a plan needs a planner or admin key.");
      return loadLatest();
    }).catch(function (err) {
      if (err.status === 401 || err.status === 403) {
        state.key = null;
        state.role = null;
        try { sessionStorage.removeItem(KEY_STORE); } catch (e) { /* storage disabled */ }
        setKeyStatus("this key is not valid", false);
        setMessage("Enter a valid API key to load the latest plan.", true);
      } else {
        setMessage("Could not load the plan: " + err.message, true);
      }
      document.body.dataset.state = "error";
    });
  }

  function forgetKey() {
    state.key = null;
    state.role = null;
    try { sessionStorage.removeItem(KEY_STORE); } catch (e) { /* storage disabled */ }
    window.location.reload();
  }

  // ------------------------------------------------------------------ start

  buildGroups();
  buildLayerList();
  $("key-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var key = $("key-input").value.trim();
    if (key) useKey(key);
  });
  $("key-forget").addEventListener("click", forgetKey);
  $("plan-form").addEventListener("submit", runPlan);
  $("cluster-close").addEventListener("click", closeCluster);
  $("print-plan").addEventListener("click", function () { window.print(); });
  $("cat-all").addEventListener("click", function () { setAllCategories(true); });
  $("cat-none").addEventListener("click", function () { setAllCategories(false); });
  window.addEventListener("hashchange", function () {
    if (!state.key) return;
    state.fitted = false;
    loadLatest().catch(function (err) { setMessage("Could not load the plan: " + err.message, true); });
  });
  document.querySelectorAll('#kind-filter input[name="kind"]').forEach(function (input) {
    input.addEventListener("change", function () {
      if (input.checked) state.kindFilter.add(input.value);
      else state.kindFilter.delete(input.value);
      render(BY_KIND);
    });
  });

  api("map/config").then(function (cfg) {
    addBaseMap(cfg);
  }).catch(function (err) {
    $("base-status").textContent = "Could not read the map settings: " + err.message;
    $("base-status").hidden = false;
  }).then(function () {
    var saved = null;
    try { saved = sessionStorage.getItem(KEY_STORE); } catch (e) { saved = null; }
    document.body.dataset.state = "key";
    if (saved) return useKey(saved);
    return undefined;
  });

  window.matcherMap = { map: map, state: state, groups: groups, selectCluster: selectCluster };
})();
