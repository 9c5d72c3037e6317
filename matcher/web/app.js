/*
 * matcher planner map: plain JavaScript over matcher's JSON API; Leaflet is the only library.
 *
 * Data: GET api/v1/map/config (no key), then with the user's API key (kept in this tab's
 * sessionStorage only) GET api/v1/me, api/v1/plans/latest and api/v1/plans/{id}/map.
 * A planner or admin key can start a plan (POST api/v1/plans); the page polls it and
 * replaces the map when it is done. Every text from the data is set with textContent.
 * "#plan=<id>" in the address shows that plan (e.g. a what-if scenario) instead of the latest.
 * Planners and admins can compare new needs where partnerships served with where none did
 * (GET api/v1/impact): the tests in the panel, the neighborhoods' groups as a map layer.
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

  // impact groups of a neighborhood (from its cells in the shown categories): colour, label
  var IMPACT_GROUPS = {
    served: ["#2b83ba", "served"],
    comparison: ["#fdae61", "comparison"],
    left_out: ["#d9d9d9", "left out or no data"]
  };

  var LAYERS = [
    // neighborhoods, gaps and clusters share one canvas (POLYGON_PANE): thousands of shapes
    // draw fast, and a click on it finds the topmost shape (clusters over neighborhoods)
    { id: "neighborhoods", label: "Neighborhood coverage", pane: "mm-polygons", z: 400 },
    // optional layers are listed only when the plan has them (gaps.geojson, recruit.geojson);
    // the coverage and gap choropleths share the polygons, so one hides the other
    { id: "gaps", label: "Gaps (unmet units)", pane: "mm-polygons", z: 400, optional: true,
      off: true, excludes: "neighborhoods" },
    { id: "clusters", label: "Need clusters", pane: "mm-polygons", z: 400 },
    // off at first: the clusters' colour already says what is short; the lines and partners
    // of what is selected are drawn on their own (SELECTION_PANE)
    { id: "unmet", label: "Unmet clusters (outline)", pane: "mm-unmet", z: 410, off: true },
    { id: "assignments", label: "All assignment lines", pane: "mm-lines", z: 420, off: true },
    { id: "organizations", label: "Organizations", pane: "mm-partners", z: 430, off: true },
    { id: "volunteers", label: "Volunteers (coarsened ~500 m)", pane: "mm-partners", z: 430,
      off: true },
    { id: "recruit", label: "Recruit sites", pane: "mm-recruit", z: 625, optional: true },
    // listed once an impact analysis is loaded (GET impact): it colours the neighborhoods
    // too, as SVG paths over the polygon canvas (no count: the list counts the plan's shapes)
    { id: "impact", label: "Impact: served vs comparison", pane: "mm-impact", z: 405,
      optional: true, off: true, excludes: ["neighborhoods", "gaps"], noCount: true }
  ];
  var RECRUIT_RADIUS_PANE = "mm-recruit-radius";
  // what is selected (a cluster, a partner or a neighborhood): outlines, lines and partners
  var SELECTION_PANE = "mm-selection";
  var SELECTION_COLOR = "#ff6f00";
  var SEARCH_LIMIT = 8;
  var BEHIND_LIMIT = 5;
  var LIST_LIMIT = 12;
  var LOAD_RINGS = 40; // partners whose load changed most, marked on the map

  var state = {
    key: null,
    role: null,
    ps: {}, // partnerships of the plan shown, by "cluster|partner" (planners and admins)
    psCounts: null,
    plan: null, // the plan record (with summary) shown
    data: null, // features by layer and lookups
    categories: [], // categories of the shown plan, sorted
    catFilter: null, // Set of shown categories (null: all)
    kindFilter: new Set(["organization", "volunteer"]),
    visible: {},
    nav: 0, // counts the user's moves to another plan or comparison
    loadSeq: 0, // the last map asked for
    compareSeq: 0, // the last comparison asked for
    selection: null, // what is selected: { kind: "cluster" | "partner" | "neighborhood", id }
    clusterColour: "share", // "share" (share served), "category" or "change" (comparison)
    comparison: null, // the comparison shown (GET plans/{a}/compare/{b})
    impact: null, // the impact analysis shown (GET impact; planners and admins)
    impactSeq: 0, // the last impact analysis asked for
    watching: {},
    fitted: false
  };
  var groups = {};
  var stale = {}; // features of hidden layers, by layer id, drawn when the layer is shown

  function $(id) { return document.getElementById(id); }

  var h = window.matcherWeb.h;

  var FORMATS = {}; // one number format per number of digits (making one is slow)

  function fmt(x, digits) {
    if (x === null || x === undefined || Number.isNaN(x)) return "–";
    var d = digits === undefined ? 1 : digits;
    var f = FORMATS[d] || (FORMATS[d] = new Intl.NumberFormat("en-US", { maximumFractionDigits: d }));
    return f.format(Number(x));
  }

  function pct(x) { return x === null || x === undefined ? "–" : fmt(100 * x, 1) + "%"; }

  // performance marks (the map page benchmark reads them); absent APIs are skipped
  function mark(name) {
    if (window.performance && performance.mark) performance.mark(name);
  }

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

  // a panel's status line (#plan-status, #whatif-status, #impact-status): text, or an error
  function setStatus(id, text, isError) {
    var s = $(id);
    s.textContent = text || "";
    s.classList.toggle("error", !!isError);
  }

  function setPlanStatus(text, isError) { setStatus("plan-status", text, isError); }

  // ------------------------------------------------------------------ API

  // an API problem (RFC 9457) as one line: its detail and each field's reason
  function problemText(body) {
    if (!body) return "";
    var text = body.detail || body.title || "";
    var problems = Array.isArray(body.problems) ? body.problems.slice(0, 5) : [];
    problems.forEach(function (p) {
      var where = [p.file, p.row === null || p.row === undefined ? null : "row " + p.row, p.field]
        .filter(function (x) { return x !== null && x !== undefined && x !== ""; }).join(" ");
      text += "; " + (where ? where + ": " : "") + (p.reason || "");
    });
    return text;
  }

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
      if (resp.ok) {
        // parsed from the bytes: a large map never becomes one big string first
        return resp.status === 204 ? null : resp.json();
      }
      return resp.text().then(function (text) {
        var body = null;
        try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
        var err = new Error(problemText(body) || resp.status + " " + resp.statusText);
        err.status = resp.status;
        throw err;
      });
    });
  }

  // ------------------------------------------------------------------ map

  var map = L.map("map", { zoomControl: true, worldCopyJump: true }).setView([20, 0], 2);
  LAYERS.forEach(function (spec) {
    if (!map.getPane(spec.pane)) map.createPane(spec.pane).style.zIndex = String(spec.z);
  });
  map.createPane(RECRUIT_RADIUS_PANE).style.zIndex = "415";
  map.createPane(SELECTION_PANE).style.zIndex = "450";
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

  // comparison classes of a cluster (the shown plan against the other one)
  var CHANGE_COLORS = { gained: "#1a9641", lost: "#d7191c", same: "#bdbdbd" };

  function shareServed(p) {
    var demand = Number(p.demand) || 0;
    return demand > 0 ? (Number(p.served) || 0) / demand : null;
  }

  function clusterFill(p) {
    if (state.clusterColour === "category") return categoryColor(p.category);
    if (state.clusterColour === "change") {
      var row = state.comparison && state.comparison.clusterRows[p.cluster_id];
      return CHANGE_COLORS[row ? row.change : "same"];
    }
    return coverageColor(shareServed(p));
  }

  function clusterStyle(f) {
    var p = f.properties;
    var max = state.data ? state.data.maxDemand : 1;
    var share = max > 0 ? Math.sqrt(p.demand / max) : 0;
    var selected = isSelected("cluster", p.cluster_id);
    var fill = clusterFill(p);
    var byShare = state.clusterColour !== "category";
    return {
      color: selected ? "#000" : (byShare ? "#52606d" : fill),
      weight: selected ? 3 : (byShare ? 0.6 : 1),
      opacity: 0.9,
      fillColor: fill,
      fillOpacity: byShare ? 0.85 : 0.15 + 0.6 * share
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
    var more = h("button", { type: "button", className: "link show-hood",
      text: "Show this neighborhood's partners and clusters" });
    more.addEventListener("click", function () {
      map.closePopup();
      selectNeighborhood(p.neighborhood_id);
    });
    box.appendChild(more);
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

  // a neighborhood of the impact layer: its group, then each shown category's cell
  function impactTip(p) {
    var lines = [p.name + " (" + p.neighborhood_id + "): " + IMPACT_GROUPS[p.group][1]];
    if (!p.cells.length) lines.push("no need or partnership in the categories shown");
    p.cells.forEach(function (c) {
      lines.push(c.category + ": " + c.group.replace("_", " ") +
        (c.reason ? " (" + c.reason + ")" : "") + ", new needs " + fmt(c.needs_before, 0) +
        " → " + fmt(c.needs_after, 0));
    });
    return lines;
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
    var lines = [
      (partner ? partner.name : p.partner_id) + " → " + p.cluster_id,
      fmt(p.units) + " units, " + fmt(p.distance_km, 2) + " km"
    ];
    var ps = psState(p);
    if (ps) lines.push("partnership: " + ps);
    return lines;
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
    impact: function (p) { return p.neighborhood_id; },
    recruit: function (p) { return p.category + "#" + p.rank; },
    clusters: function (p) { return p.cluster_id; },
    unmet: function (p) { return p.cluster_id; },
    assignments: function (p) { return p.cluster_id + "|" + p.partner_id; },
    organizations: function (p) { return p.partner_id; },
    volunteers: function (p) { return p.partner_id; }
  };

  // ``onClick(properties)``: what a click on one of the group's features selects
  function bindGroup(id, tip, onClick) {
    var group = groups[id];
    group.bindTooltip(function (layer) { return tooltip(tip(layer.feature.properties)); },
      { sticky: id !== "organizations" && id !== "volunteers" && id !== "recruit" });
    if (onClick) {
      group.on("click", function (e) {
        // placing a what-if partner: the click is a place, not a selection
        if (e.layer && e.layer.feature && !state.placing) onClick(e.layer.feature.properties);
      });
    }
  }

  function byCluster(p) { selectCluster(p.cluster_id); }
  function byPartner(p) { selectPartner(p.partner_id); }
  function byHood(p) { selectNeighborhood(p.neighborhood_id); }

  function buildGroups() {
    var polygons = L.canvas({ pane: paneOf("clusters") });
    groups.neighborhoods = L.geoJSON(null, {
      pane: paneOf("neighborhoods"),
      renderer: polygons,
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
    // the selected cluster's outline is an SVG path on the selection pane
    groups.clusters = L.geoJSON(null, {
      pane: paneOf("clusters"),
      renderer: polygons,
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
      renderer: polygons,
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
    // an SVG path per neighborhood, its class the group (impact-served, -comparison, -left_out)
    groups.impact = L.geoJSON(null, {
      pane: paneOf("impact"),
      style: function (f) {
        return {
          className: "mm-impact impact-" + f.properties.group,
          color: "#37474f",
          weight: 1,
          opacity: 0.8,
          fillColor: IMPACT_GROUPS[f.properties.group][0],
          fillOpacity: 0.6
        };
      }
    });
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
    groups.selection = L.featureGroup();
    groups.loadChanges = L.featureGroup();
    bindGroup("neighborhoods", neighborhoodTip, byHood);
    bindGroup("gaps", gapTip, null);
    bindGroup("impact", impactTip, byHood);
    bindGroup("recruit", recruitTip, null);
    bindGroup("clusters", clusterTip, byCluster);
    bindGroup("unmet", unmetTip, byCluster);
    bindGroup("assignments", assignmentTip, byCluster);
    bindGroup("organizations", partnerTip, byPartner);
    bindGroup("volunteers", partnerTip, byPartner);
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
      floors: collection.floors || null,
      // lookups of the selection views
      partnerFeatures: {}, linesByCluster: {}, linesByPartner: {}, hoodsById: {},
      gapsById: {}, clustersByHood: {}
    };
    function push(index, key, value) { (index[key] = index[key] || []).push(value); }
    collection.features.forEach(function (f) {
      var p = f.properties;
      switch (p.feature_type) {
        case "neighborhood":
          data.neighborhoods.push(f);
          data.hoodsById[p.neighborhood_id] = f;
          break;
        case "cluster":
          data.clusters.push(f);
          data.clustersById[p.cluster_id] = f;
          if (p.neighborhood) push(data.clustersByHood, p.neighborhood, f);
          data.maxDemand = Math.max(data.maxDemand, Number(p.demand) || 0);
          break;
        case "partner":
          data.partnersList.push(f);
          data.partners[p.partner_id] = p;
          data.partnerFeatures[p.partner_id] = f;
          break;
        case "assignment": break; // the lines come on their own (addLines)
        case "gap":
          data.gaps.push(f);
          data.gapsById[p.neighborhood_id] = f;
          data.maxGap = Math.max(data.maxGap, Number(p.unmet) || 0);
          break;
        case "recruit_site": data.recruit.push(f); break;
        default: break;
      }
    });
    data.linesReady = false;
    addLines(data, collection.features.filter(function (f) {
      return f.properties.feature_type === "assignment";
    }));
    return data;
  }

  // the assignment lines of a plan, indexed by cluster and by partner
  function addLines(data, features) {
    function push(index, key, value) { (index[key] = index[key] || []).push(value); }
    features.forEach(function (f) {
      var p = f.properties;
      data.assignments.push(f);
      push(data.byCluster, p.cluster_id, p);
      push(data.linesByCluster, p.cluster_id, f);
      push(data.linesByPartner, p.partner_id, f);
    });
    Object.keys(data.byCluster).forEach(function (id) {
      data.byCluster[id].sort(function (a, b) {
        return (b.units - a.units) || (a.distance_km - b.distance_km);
      });
    });
    if (features.length) data.linesReady = true;
  }

  function catShown(cat) { return state.catFilter === null || state.catFilter.has(cat); }

  // The neighborhoods of the impact layer: "served" when a cell (neighborhood x category) of
  // a shown category is served, else "comparison" when one is, else "left_out" (or no data).
  function impactFeatures() {
    if (!state.impact || !state.data) return [];
    var byHood = {};
    state.impact.cells.forEach(function (c) {
      if (catShown(c.category)) (byHood[c.neighborhood] = byHood[c.neighborhood] || []).push(c);
    });
    return state.data.neighborhoods.map(function (f) {
      var id = String(f.properties.neighborhood_id);
      var cells = byHood[id] || [];
      var kinds = cells.map(function (c) { return c.group; });
      var group = kinds.indexOf("served") >= 0 ? "served"
        : (kinds.indexOf("comparison") >= 0 ? "comparison" : "left_out");
      return { type: "Feature", geometry: f.geometry, properties: {
        neighborhood_id: id, name: f.properties.name, group: group, cells: cells } };
    });
  }

  function filtered(id) {
    var d = state.data;
    if (!d) return [];
    switch (id) {
      case "neighborhoods": return d.neighborhoods;
      case "gaps": return d.gaps;
      case "impact": return impactFeatures();
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

  // a layer's features, built only when it is shown: hidden layers cost nothing at start
  function fillGroup(id, features) {
    var group = groups[id];
    var on = map.hasLayer(group);
    if (on) map.removeLayer(group); // re-added whole: one pass over the map's renderer
    group.clearLayers();
    group.addData(features);
    delete stale[id];
    if (on) {
      group.addTo(map);
      tagElements(id);
    }
  }

  function showGroup(id) {
    var group = groups[id];
    if (state.visible[id] && stale[id]) fillGroup(id, stale[id]);
    if (state.visible[id] && !map.hasLayer(group)) {
      group.addTo(map);
      tagElements(id);
    }
    if (!state.visible[id] && map.hasLayer(group)) map.removeLayer(group);
    // on the shared canvas the last shape added is on top: clusters stay above neighborhoods
    if ((id === "neighborhoods" || id === "gaps") && state.visible[id] &&
        map.hasLayer(groups.clusters)) {
      groups.clusters.bringToFront();
    }
    if (id === "recruit") {
      var radius = groups.recruitRadius;
      if (state.visible[id] && !map.hasLayer(radius)) radius.addTo(map);
      if (!state.visible[id] && map.hasLayer(radius)) map.removeLayer(radius);
    }
    if (id === "gaps" || id === "neighborhoods") {
      $("coverage-legend").hidden = !state.visible.neighborhoods;
      $("gap-legend").hidden = !state.visible.gaps || !(state.data && state.data.gaps.length);
    }
    if (id === "impact") $("impact-legend").hidden = !state.visible.impact || !state.impact;
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

  // the impact legend: each group's colour and how many neighborhoods it has
  function renderImpactLegend(features) {
    var legend = $("impact-legend");
    legend.textContent = "";
    var n = {};
    features.forEach(function (f) { n[f.properties.group] = (n[f.properties.group] || 0) + 1; });
    legend.appendChild(h("div",
      { text: "Impact: neighborhoods by their areas in the categories shown:" }));
    Object.keys(IMPACT_GROUPS).forEach(function (g) {
      legend.appendChild(h("span", { className: "item", "data-impact-group": g },
        h("span", { className: "swatch", style: "background:" + IMPACT_GROUPS[g][0] }),
        IMPACT_GROUPS[g][1] + " (" + fmt(n[g] || 0, 0) + ")"));
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
      var features = filtered(spec.id);
      if (state.visible[spec.id]) fillGroup(spec.id, features);
      else {
        groups[spec.id].clearLayers();
        stale[spec.id] = features;
      }
      if (spec.id === "recruit") drawRecruitRadius(features);
      if (spec.id === "gaps") renderGapLegend();
      if (spec.id === "impact") renderImpactLegend(features);
      var count = document.querySelector('[data-count="' + spec.id + '"]');
      if (count) count.textContent = String(features.length);
      if (spec.optional) {
        var item = document.querySelector('#layer-list li[data-layer-item="' + spec.id + '"]');
        var has = spec.id === "impact" ? !!(state.impact && state.data)
          : !!(state.data && state.data[spec.id] && state.data[spec.id].length);
        if (item) item.hidden = !has;
      }
      showGroup(spec.id);
    });
  }

  var BY_CATEGORY = ["clusters", "unmet", "assignments", "organizations", "volunteers", "recruit",
    "impact"];
  var BY_KIND = ["assignments", "organizations", "volunteers"];

  function excludes(spec, id) { return [].concat(spec.excludes || []).indexOf(id) >= 0; }

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
        // the coverage, gap and impact choropleths share the neighborhoods: one at a time
        LAYERS.forEach(function (other) {
          if (!box.checked) return;
          if (excludes(other, spec.id) || excludes(spec, other.id)) setVisible(other.id, false);
        });
      });
      var attrs = { "data-layer-item": spec.id };
      if (spec.optional) attrs.hidden = "hidden";
      list.appendChild(h("li", attrs, h("label", null, box, " ",
        h("span", { className: "key key-" + spec.id, "aria-hidden": "true" }), spec.label + " "),
        spec.noCount ? null : h("span", { className: "count", "data-count": spec.id, text: "0" })));
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

  // ------------------------------------------------------------------ selection

  function hoodName(id) {
    var f = state.data && state.data.hoodsById[id];
    return f ? f.properties.name + " (" + id + ")" : (id ? "neighborhood " + id : "no neighborhood");
  }

  function partnerLabel(id) {
    var p = state.data && state.data.partners[id];
    return p && p.name ? p.name + " (" + id + ")" : id;
  }

  // a button in a panel that selects something else
  function jump(text, onClick, attrs) {
    var b = h("button", Object.assign({ type: "button", className: "link", text: text }, attrs || {}));
    b.addEventListener("click", onClick);
    return b;
  }

  function showPanel(id) {
    ["cluster-panel", "partner-panel", "hood-panel"].forEach(function (other) {
      $(other).hidden = other !== id;
    });
    if (id) $(id).scrollIntoView({ block: "nearest" });
  }

  // Draw what is selected on its own pane: assignment ``lines``, partner markers (``partners``,
  // ids) and polygon ``outlines`` (features); then show all of it (pan and zoom).
  function highlight(lines, partners, outlines) {
    var sel = groups.selection;
    sel.clearLayers();
    outlines.forEach(function (f) {
      L.geoJSON(f, {
        pane: SELECTION_PANE,
        interactive: false,
        className: "mm-sel-outline",
        style: { color: SELECTION_COLOR, weight: 3, opacity: 1, fillOpacity: 0 }
      }).addTo(sel);
    });
    lines.forEach(function (f) {
      var u = Number(f.properties.units) || 0;
      var ps = psState(f.properties);
      var line = L.geoJSON(f, {
        pane: SELECTION_PANE,
        className: "mm-sel-line" + (ps ? " ps-line-" + ps.split(", ")[0] : ""),
        style: { color: SELECTION_COLOR, opacity: 0.95, weight: Math.min(10, 2 + 1.5 * Math.sqrt(u)) }
      });
      line.bindTooltip(function () { return tooltip(assignmentTip(f.properties)); }, { sticky: true });
      line.on("click", function () { selectCluster(f.properties.cluster_id); });
      line.addTo(sel);
    });
    partners.forEach(function (id) {
      var f = state.data.partnerFeatures[id];
      if (!f) return;
      var c = f.geometry.coordinates;
      var volunteer = f.properties.kind === "volunteer";
      var marker = L.circleMarker([c[1], c[0]], {
        pane: SELECTION_PANE,
        className: "mm-sel-partner",
        radius: 8,
        color: "#000",
        weight: 2,
        fillColor: volunteer ? "#8e24aa" : "#1565c0",
        fillOpacity: 1
      });
      marker.bindTooltip(function () { return tooltip(partnerTip(f.properties)); });
      marker.on("click", function () { selectPartner(id); });
      marker.addTo(sel);
    });
    if (!map.hasLayer(sel)) sel.addTo(map);
    sel.eachLayer(function (group) {
      group.eachLayer ? group.eachLayer(tagSelected) : tagSelected(group);
    });
    var bounds = sel.getBounds();
    if (bounds.isValid()) map.fitBounds(bounds.pad(0.15), { maxZoom: 15, animate: false });
  }

  function tagSelected(layer) {
    var el = layer.getElement && layer.getElement();
    var p = layer.feature ? layer.feature.properties : null;
    if (!el) return;
    if (p && p.feature_type === "assignment") el.setAttribute("data-id", p.cluster_id + "|" + p.partner_id);
    else if (p && p.feature_type === "cluster") el.setAttribute("data-id", p.cluster_id);
    else if (p && p.feature_type === "neighborhood") el.setAttribute("data-id", p.neighborhood_id);
  }

  function partnersOf(lines) {
    var seen = [];
    lines.forEach(function (f) {
      if (seen.indexOf(f.properties.partner_id) < 0) seen.push(f.properties.partner_id);
    });
    return seen;
  }

  // one thing is selected at a time: the clusters are restyled (the selected one outlined)
  function setSelection(kind, id) {
    state.selection = kind ? { kind: kind, id: id } : null;
    if (state.data) groups.clusters.setStyle(clusterStyle);
    document.body.dataset.selected = kind ? kind + ":" + id : "";
  }

  function isSelected(kind, id) {
    return !!state.selection && state.selection.kind === kind && state.selection.id === id;
  }

  // show a selection again (the plan's lines arrived, or another plan has the same thing)
  function reselect(selection) {
    if (!selection) return;
    var select = { cluster: selectCluster, partner: selectPartner,
      neighborhood: selectNeighborhood }[selection.kind];
    select(selection.id); // a no-op when the plan shown has no such thing
  }

  function clearSelection() {
    setSelection(null);
    groups.selection.clearLayers();
    showPanel(null);
  }

  function selectCluster(clusterId) {
    var d = state.data;
    var f = d && d.clustersById[clusterId];
    if (!f) return;
    setSelection("cluster", clusterId);
    var p = f.properties;
    $("cluster-id").textContent = p.cluster_id;
    var dl = $("cluster-facts");
    dl.textContent = "";
    fact(dl, "category", p.category);
    if (p.neighborhood) {
      var where = h("dd");
      where.appendChild(jump(hoodName(p.neighborhood), function () {
        selectNeighborhood(p.neighborhood);
      }, { "data-hood": p.neighborhood }));
      dl.appendChild(h("dt", { text: "neighborhood" }));
      dl.appendChild(where);
    }
    fact(dl, "needs", fmt(p.n_needs, 0));
    fact(dl, "demand", fmt(p.demand) + " units/week, severity " + fmt(p.severity, 2));
    fact(dl, "served", fmt(p.served) + " units (" + pct(shareServed(p)) + ")");
    if (p.unmet > 0) {
      fact(dl, "unmet", fmt(p.unmet) + " units: " + reasonText(p.unmet_reason) +
        " (" + p.unmet_reason + ")", "unmet-reason");
    }
    var list = $("cluster-recs");
    list.textContent = "";
    var recs = d.byCluster[clusterId] || [];
    if (!d.linesReady) {
      list.appendChild(h("li", { className: "rec loading", text: "Loading the recommended partners…" }));
    } else if (!recs.length) {
      list.appendChild(h("li", { className: "rec none", text: "No partner recommended" +
        (p.unmet_reason ? ": " + reasonText(p.unmet_reason) + "." : ".") }));
    }
    recs.forEach(function (a) {
      var partner = d.partners[a.partner_id] || {};
      var head = h("div", null,
        jump(partner.name || a.partner_id, function () { selectPartner(a.partner_id); },
          { "data-partner-link": a.partner_id }),
        " (" + a.partner_id + ", " + (partner.kind || "partner") + "): " + fmt(a.units) +
          " units, " + fmt(a.distance_km, 2) + " km, cost " + fmt(a.cost, 3) + " (units × cost per unit)");
      psBadges(clusterId, a.partner_id).forEach(function (b) {
        head.appendChild(document.createTextNode(" "));
        head.appendChild(b);
      });
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
    var lines = d.linesByCluster[clusterId] || [];
    highlight(lines, partnersOf(lines), [f]);
    showPanel("cluster-panel");
  }

  // a partner: its load and capacity, and every cluster it serves in this plan
  function selectPartner(partnerId) {
    var d = state.data;
    var p = d && d.partners[partnerId];
    if (!p) return;
    setSelection("partner", partnerId);
    $("partner-name").textContent = p.name || partnerId;
    var dl = $("partner-facts");
    dl.textContent = "";
    fact(dl, "id", partnerId);
    fact(dl, "kind", p.kind + (p.coarsened ? " (location coarsened to a ~500 m grid)" : ""));
    fact(dl, "offers", partnerCategories(p).join(", "));
    var capacity = Number(p.capacity) || 0;
    var used = Number(p.used) || 0;
    fact(dl, "load", fmt(used) + " of " + fmt(capacity) + " units/week (" +
      (capacity > 0 ? pct(used / capacity) : "–") + ")", used >= capacity && capacity > 0
      ? "partner-load full" : "partner-load");
    fact(dl, "free", fmt(Math.max(0, capacity - used)) + " units/week");
    fact(dl, "radius", fmt(p.radius_km, 2) + " km");
    var lines = (d.linesByPartner[partnerId] || []).slice().sort(function (a, b) {
      return (b.properties.units - a.properties.units) ||
        (a.properties.cluster_id < b.properties.cluster_id ? -1 : 1);
    });
    var list = $("partner-clusters");
    list.textContent = "";
    $("partner-clusters-head").textContent = !d.linesReady ? "Loading the clusters it serves…"
      : (lines.length ? "Clusters it serves (" + fmt(lines.length, 0) + ")"
        : "It serves no cluster in this plan");
    lines.forEach(function (f) {
      var a = f.properties;
      var c = d.clustersById[a.cluster_id];
      var cp = c ? c.properties : {};
      list.appendChild(h("li", { "data-cluster": a.cluster_id },
        jump(a.cluster_id, function () { selectCluster(a.cluster_id); }),
        ": " + fmt(a.units) + " units of " + (cp.category || a.category || "") + ", " +
          fmt(a.distance_km, 2) + " km" + (cp.neighborhood ? ", " + hoodName(cp.neighborhood) : "")));
    });
    var outlines = lines.map(function (f) { return d.clustersById[f.properties.cluster_id]; })
      .filter(Boolean);
    highlight(lines, [partnerId], outlines);
    if (!lines.length) {
      var g = d.partnerFeatures[partnerId].geometry.coordinates;
      map.setView([g[1], g[0]], Math.max(map.getZoom(), 14), { animate: false });
    }
    showPanel("partner-panel");
  }

  // the units and reasons of a set of clusters, per category
  function byCategory(clusters) {
    var out = {};
    clusters.forEach(function (f) {
      var p = f.properties;
      var row = out[p.category] = out[p.category] ||
        { demand: 0, served: 0, unmet: 0, no_partner_in_range: 0, partners_in_range_full: 0 };
      row.demand += Number(p.demand) || 0;
      row.served += Number(p.served) || 0;
      row.unmet += Number(p.unmet) || 0;
      if (p.unmet > 0 && p.unmet_reason in row) row[p.unmet_reason] += Number(p.unmet);
    });
    return out;
  }

  // A neighborhood's units by category and its unmet units by reason: from its gap feature
  // (counted need by need, as the plan's coverage is) or, without gaps.geojson, from the
  // clusters whose centre lies in it.
  function hoodBreakdown(hoodId) {
    var gap = state.data.gapsById[hoodId];
    var cats = {};
    if (gap) {
      var gc = gap.properties.categories || {};
      Object.keys(gc).forEach(function (c) {
        cats[c] = { demand: gc[c].demand, served: gc[c].served, unmet: gc[c].unmet,
          no_partner_in_range: gc[c].unmet_no_partner_in_range || 0,
          partners_in_range_full: gc[c].unmet_partners_in_range_full || 0 };
      });
    } else {
      cats = byCategory(state.data.clustersByHood[hoodId] || []);
    }
    var reasons = { no_partner_in_range: 0, partners_in_range_full: 0 };
    Object.keys(cats).forEach(function (c) {
      reasons.no_partner_in_range += cats[c].no_partner_in_range;
      reasons.partners_in_range_full += cats[c].partners_in_range_full;
    });
    return { cats: cats, reasons: reasons, fromGaps: !!gap };
  }

  // the last line of a list cut at LIST_LIMIT: how many more there are
  function moreThanShown(list, total) {
    if (total > LIST_LIMIT) {
      list.appendChild(h("li", { className: "more", text: "and " + fmt(total - LIST_LIMIT, 0) +
        " more" }));
    }
  }

  // a neighborhood: coverage, its floor, what is unmet and why, who serves it, where it is short
  function selectNeighborhood(hoodId) {
    var d = state.data;
    var f = d && d.hoodsById[hoodId];
    if (!f) return;
    setSelection("neighborhood", hoodId);
    var p = f.properties;
    $("hood-name").textContent = p.name + " (" + hoodId + ")";
    var dl = $("hood-facts");
    dl.textContent = "";
    var clusters = d.clustersByHood[hoodId] || [];
    if (p.coverage === null || p.coverage === undefined) {
      fact(dl, "coverage", "no demand in this plan");
    } else {
      fact(dl, "coverage", pct(p.coverage) + ": served " + fmt(p.served) + " of " +
        fmt(p.demand) + " units", p.coverage < 0.75 ? "unmet-reason" : null);
      fact(dl, "unmet", fmt(p.unmet) + " units");
    }
    var breakdown = hoodBreakdown(hoodId);
    var cats = breakdown.cats;
    var reasons = breakdown.reasons;
    Object.keys(reasons).forEach(function (r) {
      if (reasons[r] > 0) {
        fact(dl, "unmet because", fmt(reasons[r]) + " units: " + reasonText(r) + " (" + r + ")",
          "unmet-reason");
      }
    });
    var floor = (d.floors || []).filter(function (r) { return r.neighborhood_id === hoodId; })[0];
    if (floor) {
      fact(dl, "equity floor", (floor.floor_met ? "met: " : "not met: ") + "served " +
        fmt(floor.served) + " of a floor of " + fmt(floor.floor) + " units" +
        (floor.reason ? ". " + floor.reason : ""), floor.floor_met ? null : "unmet-reason");
    }
    if (p.population) fact(dl, "population", fmt(p.population, 0));
    fact(dl, "clusters", fmt(clusters.length, 0) + " centred here (" +
      fmt(clusters.filter(function (c) { return c.properties.unmet > 0; }).length, 0) + " short)");

    var tbody = document.querySelector("#hood-categories tbody");
    tbody.textContent = "";
    Object.keys(cats).sort(function (a, b) {
      return (cats[b].unmet - cats[a].unmet) || (a < b ? -1 : 1);
    }).forEach(function (c) {
      var r = cats[c];
      tbody.appendChild(h("tr", { "data-category": c }, h("td", { text: c }),
        h("td", { text: fmt(r.demand) }), h("td", { text: fmt(r.served) }),
        h("td", { text: fmt(r.unmet) }), h("td", { text: pct(r.demand > 0 ? r.served / r.demand : null) })));
    });
    $("hood-categories").hidden = !Object.keys(cats).length;

    // who carries it: units per partner over the neighborhood's clusters
    var lines = [];
    var units = {};
    clusters.forEach(function (c) {
      (d.linesByCluster[c.properties.cluster_id] || []).forEach(function (l) {
        lines.push(l);
        units[l.properties.partner_id] = (units[l.properties.partner_id] || 0) +
          (Number(l.properties.units) || 0);
      });
    });
    var carriers = Object.keys(units).sort(function (a, b) {
      return (units[b] - units[a]) || (a < b ? -1 : 1);
    });
    var plist = $("hood-partners");
    plist.textContent = "";
    $("hood-partners-head").textContent = !d.linesReady ? "Loading the partners serving it…"
      : (carriers.length ? "Partners serving it (" + fmt(carriers.length, 0) + ")"
        : "No partner serves it in this plan");
    carriers.slice(0, LIST_LIMIT).forEach(function (id) {
      plist.appendChild(h("li", { "data-partner": id },
        jump(partnerLabel(id), function () { selectPartner(id); }), ": " + fmt(units[id]) + " units"));
    });
    moreThanShown(plist, carriers.length);
    var short = clusters.filter(function (c) { return c.properties.unmet > 0; })
      .sort(function (a, b) {
        return (b.properties.unmet - a.properties.unmet) ||
          (a.properties.cluster_id < b.properties.cluster_id ? -1 : 1);
      });
    var clist = $("hood-short");
    clist.textContent = "";
    $("hood-short-head").textContent = short.length
      ? "Clusters short of service (" + fmt(short.length, 0) + ")" : "No cluster is short here";
    short.slice(0, LIST_LIMIT).forEach(function (c) {
      var cp = c.properties;
      clist.appendChild(h("li", { "data-cluster": cp.cluster_id },
        jump(cp.cluster_id, function () { selectCluster(cp.cluster_id); }),
        ": " + fmt(cp.unmet) + " of " + fmt(cp.demand) + " units unmet, " + reasonText(cp.unmet_reason)));
    });
    moreThanShown(clist, short.length);
    highlight(lines, carriers, [f]);
    showPanel("hood-panel");
  }

  // "where are we short": the neighborhoods with the lowest coverage, each a link to its view
  function renderBehind() {
    var list = $("behind-list");
    list.textContent = "";
    var d = state.data;
    var hoods = d.neighborhoods.filter(function (f) {
      return f.properties.coverage !== null && f.properties.coverage !== undefined &&
        f.properties.unmet > 0;
    }).sort(function (a, b) {
      return (a.properties.coverage - b.properties.coverage) ||
        (b.properties.unmet - a.properties.unmet) ||
        (a.properties.neighborhood_id < b.properties.neighborhood_id ? -1 : 1);
    });
    $("behind-panel").hidden = !d.neighborhoods.length;
    $("behind-none").hidden = hoods.length > 0;
    hoods.slice(0, BEHIND_LIMIT).forEach(function (f) {
      var p = f.properties;
      var reasons = hoodBreakdown(p.neighborhood_id).reasons;
      var full = reasons.partners_in_range_full;
      var none = reasons.no_partner_in_range;
      var why = full >= none ? "mostly: every partner within reach is full"
        : "mostly: no partner within reach offers what is needed";
      if (!(full + none > 0)) why = "";
      list.appendChild(h("li", { "data-hood": p.neighborhood_id },
        jump(p.name, function () { selectNeighborhood(p.neighborhood_id); }),
        ": " + pct(p.coverage) + " served, " + fmt(p.unmet) + " units unmet" +
          (why ? " (" + why + ")" : "")));
    });
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
    var was = state.selection;
    clearSelection();
    if (state.comparison && state.comparison.shown !== rec.plan_id) leaveComparison();
    // fit the view first: the layers are then drawn once, at their final zoom
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
        map.fitBounds(bounds, { padding: [20, 20], animate: false });
        state.fitted = true;
      }
    }
    buildCategoryFilter();
    render();
    renderMetrics();
    renderBehind();
    buildSearch();
    renderLegend();
    renderWhatif();
    setMessage("");
    ["metrics-panel", "layers-panel", "filters-panel", "search-panel"].forEach(function (id) {
      $(id).hidden = false;
    });
    reselect(was);
    document.body.dataset.planId = rec.plan_id;
    document.body.dataset.state = state.data.linesReady ? "ready" : "lines";
    // the files and the list of plans once the map is painted (their answers wait)
    afterPaint(function () {
      if (!state.plan || state.plan.plan_id !== rec.plan_id) return;
      renderFiles(rec);
      refreshPlans();
    });
  }

  function afterPaint(fn) {
    requestAnimationFrame(function () { setTimeout(fn, 0); });
  }

  // ------------------------------------------------------------------ search

  // one entry per neighborhood, partner and cluster: [label, lowercased text, select]
  function buildSearch() {
    var d = state.data;
    var entries = [];
    d.neighborhoods.forEach(function (f) {
      var p = f.properties;
      entries.push({ kind: "neighborhood", id: p.neighborhood_id, label: p.name + " (" +
        p.neighborhood_id + ")", text: (p.name + " " + p.neighborhood_id).toLowerCase() });
    });
    d.partnersList.forEach(function (f) {
      var p = f.properties;
      entries.push({ kind: p.kind, id: p.partner_id, label: (p.name || p.partner_id) + " (" +
        p.partner_id + ")", text: ((p.name || "") + " " + p.partner_id).toLowerCase() });
    });
    d.clusters.forEach(function (f) {
      var p = f.properties;
      entries.push({ kind: "cluster", id: p.cluster_id, label: p.cluster_id,
        text: p.cluster_id.toLowerCase() });
    });
    state.search = entries;
    $("search-input").value = "";
    $("search-results").textContent = "";
  }

  function choose(entry) {
    if (entry.kind === "neighborhood") selectNeighborhood(entry.id);
    else if (entry.kind === "cluster") selectCluster(entry.id);
    else selectPartner(entry.id);
    $("search-results").textContent = "";
  }

  // matches: whole words first, then any part; neighborhoods before partners before clusters
  function searchMatches(query) {
    var q = query.trim().toLowerCase();
    if (!q || !state.search) return [];
    var starts = [];
    var contains = [];
    for (var i = 0; i < state.search.length; i++) {
      var e = state.search[i];
      var at = e.text.indexOf(q);
      if (at < 0) continue;
      if (at === 0 || e.text.charAt(at - 1) === " " || e.text === q) starts.push(e);
      else contains.push(e);
      if (starts.length >= SEARCH_LIMIT) break;
    }
    return starts.concat(contains).slice(0, SEARCH_LIMIT);
  }

  function renderSearch() {
    var list = $("search-results");
    list.textContent = "";
    var query = $("search-input").value;
    var found = searchMatches(query);
    if (query.trim() && !found.length) {
      list.appendChild(h("li", { className: "none", text: "Nothing in this plan matches." }));
    }
    found.forEach(function (e) {
      list.appendChild(h("li", { "data-kind": e.kind, "data-id": e.id },
        jump(e.label, function () { choose(e); }), " " + e.kind));
    });
  }

  // ------------------------------------------------------------------ legend

  var legend = L.control({ position: "bottomright" });
  legend.onAdd = function () {
    var box = L.DomUtil.create("div", "map-legend");
    box.id = "map-legend";
    L.DomEvent.disableClickPropagation(box);
    L.DomEvent.disableScrollPropagation(box);
    return box;
  };
  legend.addTo(map);

  function legendRow(box, swatch, text, wrap) {
    box.appendChild(h("div", { className: wrap ? "item wrap" : "item" }, swatch, text));
  }

  function renderLegend() {
    var box = $("map-legend");
    box.textContent = "";
    box.appendChild(h("strong", { text: "Share of demand served" }));
    box.appendChild(h("div", { className: "sub",
      text: state.clusterColour === "share" ? "neighborhoods (pale) and clusters (solid)"
        : "neighborhoods" }));
    COVERAGE_CLASSES.forEach(function (c) {
      legendRow(box, h("span", { className: "swatch", style: "background:" + c[1] }), c[2]);
    });
    legendRow(box, h("span", { className: "swatch", style: "background:" + NO_DEMAND }), "no demand");
    if (state.clusterColour === "change" && state.comparison) {
      box.appendChild(h("strong", { text: "Clusters against plan " + shortId(state.comparison.other) }));
      [["gained", "served more"], ["lost", "served less"], ["same", "unchanged"]].forEach(function (r) {
        legendRow(box, h("span", { className: "swatch", style: "background:" + CHANGE_COLORS[r[0]] }),
          r[1]);
      });
    }
    if (state.comparison) {
      box.appendChild(h("strong", { text: "Partners' load against plan " +
        shortId(state.comparison.other) + " (the " + fmt(state.comparison.rings || 0, 0) +
        " largest changes)" }));
      legendRow(box, h("span", { className: "ring", style: "border-color:" + CHANGE_COLORS.gained }),
        "carries more (size: units)");
      legendRow(box, h("span", { className: "ring", style: "border-color:" + CHANGE_COLORS.lost }),
        "carries less");
    }
    if (state.clusterColour === "category") {
      box.appendChild(h("div", { className: "sub", text: "clusters: colour of their category" }));
    }
    box.appendChild(h("strong", { text: "Partners" }));
    legendRow(box, h("span", { className: "dot", style: "background:#1565c0" }), "organization");
    legendRow(box, h("span", { className: "dot", style: "background:#8e24aa" }),
      "volunteer (~500 m grid)");
    legendRow(box, h("span", { className: "line", style: "border-color:" + SELECTION_COLOR }),
      "who serves the selection (width: units)", true);
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
    }).catch(function (err) {
      $("files-status").textContent = "Could not list the plan's files: " + err.message;
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

  // Show a plan's map. Only the last plan asked for is shown: an earlier answer that
  // arrives later is dropped (the user clicked on).
  // The map comes in two parts: everything but the assignment lines first (what is drawn
  // at first), then the lines (what a selection draws and explains).
  function loadPlan(rec) {
    var seq = ++state.loadSeq;
    var path = "plans/" + encodeURIComponent(rec.plan_id) + "/map?part=";
    document.body.dataset.state = "loading";
    mark("matcher:map-requested");
    return api(path + "base").then(function (collection) {
      if (seq !== state.loadSeq) return undefined;
      mark("matcher:map-parsed");
      showPlan(rec, collection);
      mark("matcher:map-ready");
      document.body.dataset.drawn = rec.plan_id;
      return new Promise(afterPaint).then(function () {
        return api(path + "lines");
      }).then(function (lines) {
        if (seq !== state.loadSeq) return;
        showLines(lines.features);
        mark("matcher:lines-ready");
        return loadPartnerships(rec);
      }).then(function () {
        if (seq !== state.loadSeq) return;
        document.body.dataset.state = "ready";
      });
    });
  }

  // the lines arrived: drawn where asked, counted, and the selection shown with them
  function showLines(features) {
    var d = state.data;
    addLines(d, features);
    d.linesReady = true;
    render(["assignments"]);
    reselect(state.selection);
  }

  // A plan that finishes is shown by itself only if the user has not gone to another plan
  // (or comparison) since it was started; else the page says it is done.
  function stillHere(nav) { return nav === state.nav; }

  function watchPlan(planId, replaced) {
    if (state.watching[planId]) return state.watching[planId];
    var nav = state.nav;
    var name = "Plan " + shortId(planId);
    var p = waitDone(planId, function (rec) {
      setPlanStatus(name + " is " + rec.status + "…");
    }).then(function (rec) {
      if (rec.status === "failed") {
        setPlanStatus(name + " failed: " + (rec.error || "unknown error"), true);
      } else if (rec.status !== "done") {
        setPlanStatus(name + " is still " + rec.status + "; reload the page later.", true);
      } else if (!stillHere(nav)) {
        setPlanStatus(name + " is done" + (rec.published_at ? " and in force" : " (a draft)") +
          "; show it from the list of plans.");
        refreshPlans();
      } else {
        setPlanStatus(name + " is done; loading it…");
        if (rec.published_at) {  // published when done: the plan in force, the address says so
          history.replaceState(null, "", window.location.pathname + window.location.search);
        } else {
          history.replaceState(null, "", "#plan=" + rec.plan_id);
        }
        return loadPlan(rec).then(function () {
          setPlanStatus(name + " is shown" +
            (replaced && replaced !== planId ? " (in place of plan " + shortId(replaced) + ")" : "") +
            (rec.published_at ? "." : ": a draft, not in force. Publish it from the list of " +
              "plans to put it in force and offer its assignments to partners."));
          refreshPlans();
          return rec;
        });
      }
      return rec;
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
    return api("plans/" + encodeURIComponent(planId)).catch(function (err) {
      if (err.status !== 404 && err.status !== 403) throw err;
      // an unknown plan, or one this key may not see: the plan in force instead
      history.replaceState(null, "", window.location.pathname + window.location.search);
      return loadLatest().then(function () {
        setMessage("Plan " + shortId(planId) + " cannot be shown (" + err.message +
          "); this is the plan in force.", true);
        return null;
      });
    }).then(function (rec) {
      if (!rec) return undefined;
      if (rec.status === "done") {
        return loadPlan(rec).then(function () { setMessage(""); });
      }
      setMessage("Plan " + shortId(planId) + " is " + rec.status + "; it is shown when done.");
      document.body.dataset.state = "no-plan";
      return watchPlan(planId, null);
    });
  }

  function loadLatest(asked) {
    var wanted = requestedPlan();
    if (wanted) return loadRequested(wanted);
    setMessage("Loading the latest plan…");
    return (asked || api("plans/latest")).then(function (body) {
      var pending = body.pending || [];
      state.inForce = body.plan ? body.plan.plan_id : null;
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

  // the form's plan request, or null (the reason said) when a field is out of range
  function planRequest() {
    var body = {
      objective: $("plan-objective").value,
      cluster_km: Number($("plan-cluster-km").value),
      seed: Number($("plan-seed").value),
      report: $("plan-report").checked
    };
    if (!(body.cluster_km > 0) || !(body.seed >= 0) || Math.floor(body.seed) !== body.seed) {
      setPlanStatus("Cluster distance must be > 0 km and the seed a whole number ≥ 0.", true);
      return null;
    }
    var floor = $("plan-min-coverage").value.trim();
    if (floor !== "") {
      body.min_coverage = Number(floor);
      if (!(body.min_coverage >= 0 && body.min_coverage <= 1)) {
        setPlanStatus("The minimum coverage must be a number from 0 to 1.", true);
        return null;
      }
    }
    var k = $("plan-recruit-k").value.trim();
    if (k !== "") {
      body.recruit_k = Number(k);
      body.recruit_radius_km = Number($("plan-recruit-radius").value);
      if (!(body.recruit_k >= 1) || Math.floor(body.recruit_k) !== body.recruit_k ||
          !(body.recruit_radius_km > 0)) {
        setPlanStatus("Recruit sites must be a whole number ≥ 1 and the radius > 0 km.", true);
        return null;
      }
    }
    return body;
  }

  // A new plan is a draft: shown here when it finishes, used by no one else until published.
  function runPlan(event) {
    event.preventDefault();
    if (!canPlan()) return;
    var body = planRequest();
    if (!body) return;
    var button = $("plan-run");
    button.disabled = true;
    var replaced = state.plan && state.plan.plan_id;
    setPlanStatus("Starting a plan…");
    api("plans", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (created) {
      setPlanStatus("Plan " + shortId(created.plan_id) + " (a draft) is queued…");
      refreshPlans();
      return watchPlan(created.plan_id, replaced);
    }).catch(function (err) {
      setPlanStatus("Could not start a plan: " + err.message, true);
    }).then(function () { button.disabled = !canPlan(); });
  }

  // ------------------------------------------------------------------ publishing

  // Publishing puts a draft in force: the page says what it does and asks first.
  function askPublish(rec) {
    state.pendingPublish = rec.plan_id;
    var inForce = state.inForce;
    $("publish-confirm-text").textContent = "Publish plan " + shortId(rec.plan_id) + "? It " +
      "becomes the plan in force: outreach teams' nearby search and intake will use it" +
      (inForce ? " instead of plan " + shortId(inForce) : "") + ", and its assignments are " +
      "offered to their partners. Accepted partnerships stay; offers not yet answered are " +
      "withdrawn.";
    $("publish-confirm").hidden = false;
    $("publish-confirm-yes").focus();
  }

  function cancelPublish() {
    state.pendingPublish = null;
    $("publish-confirm").hidden = true;
  }

  function confirmPublish() {
    var planId = state.pendingPublish;
    cancelPublish();
    if (!planId || !canPlan()) return Promise.resolve();
    $("plans-status").textContent = "Publishing plan " + shortId(planId) + "…";
    return api("plans/" + encodeURIComponent(planId) + "/publish", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: "{}"
    }).then(function (result) {
      state.inForce = planId;
      $("plans-status").textContent = "Plan " + shortId(planId) + " is in force: " +
        fmt(result.offered, 0) + " offer(s) sent, " + fmt(result.withdrawn, 0) + " withdrawn.";
      refreshPlans();
      if (state.plan && state.plan.plan_id === planId) {
        history.replaceState(null, "", window.location.pathname + window.location.search);
        return api("plans/" + encodeURIComponent(planId)).then(loadPlan);
      }
      return undefined;
    }).catch(function (err) {
      $("plans-status").textContent = "Could not publish plan " + shortId(planId) + ": " +
        err.message;
    });
  }

  // The partnerships of the plan shown (planners and admins), by "cluster|partner".
  var PS_PAGE = 1000;

  function loadPartnerships(rec) {
    state.ps = {};
    state.psCounts = null;
    if (!canPlan() || !rec.published_at) return Promise.resolve();
    var planId = rec.plan_id;
    var all = [];
    function page(offset) {
      return api("partnerships?plan_id=" + encodeURIComponent(planId) + "&limit=" + PS_PAGE +
        "&offset=" + offset).then(function (body) {
        all = all.concat(body.results || []);
        if ((body.results || []).length === PS_PAGE && all.length < body.total) {
          return page(offset + PS_PAGE);
        }
        return all;
      });
    }
    return page(0).then(function (rows) {
      if (!state.plan || state.plan.plan_id !== planId) return;
      var byPair = {};
      var counts = {};
      rows.forEach(function (r) {
        var key = r.cluster_id + "|" + r.partner_id;
        (byPair[key] = byPair[key] || []).push(r);
        counts[r.state] = (counts[r.state] || 0) + 1;
      });
      state.ps = byPair;
      state.psCounts = counts;
      renderPartnershipCounts();
      reselect(state.selection);
    }).catch(function (err) {
      setMessage("Could not load the partnerships: " + err.message, true);
    });
  }

  var PS_ORDER = ["offered", "accepted", "active", "completed", "declined", "cancelled", "lapsed"];

  function renderPartnershipCounts() {
    var dl = $("plan-metrics");
    var old = dl.querySelector("[data-fact='partnerships']");
    if (old) { dl.removeChild(old.previousSibling); dl.removeChild(old); }
    var counts = state.psCounts;
    if (!counts) return;
    var dd = h("dd", { "data-fact": "partnerships" });
    PS_ORDER.forEach(function (st) {
      if (counts[st]) {
        dd.appendChild(h("span", { className: "ps-state ps-" + st, text: counts[st] + " " + st }));
        dd.appendChild(document.createTextNode(" "));
      }
    });
    if (!dd.childNodes.length) dd.textContent = "none";
    dl.appendChild(h("dt", { text: "partnerships" }));
    dl.appendChild(dd);
  }

  // the states of a pair's partnerships, as badges (none: a draft, or not a planner)
  function psBadges(clusterId, partnerId) {
    return (state.ps[clusterId + "|" + partnerId] || []).map(function (r) {
      return h("span", {
        className: "ps-state ps-" + r.state,
        "data-partnership": r.partnership_id,
        title: fmt(r.units) + " units" + (r.reason ? ": " + r.reason : ""),
        text: r.state
      });
    });
  }

  function psState(p) {
    var rows = (state.ps || {})[p.cluster_id + "|" + p.partner_id] || [];
    return rows.length ? rows.map(function (r) { return r.state; }).join(", ") : null;
  }

  // ------------------------------------------------------------------ what-if

  function setWhatifStatus(text, isError) { setStatus("whatif-status", text, isError); }

  function isScenario(rec) { return !!(rec && rec.parameters && rec.parameters.scenario); }

  // the what-if form is for a finished plan that is not itself a what-if, and planners
  function resetWhatif() {
    state.placing = false;
    state.whatifAt = null;
    if (state.whatifMarker) map.removeLayer(state.whatifMarker);
    state.whatifMarker = null;
    $("whatif-unplace").hidden = true;
    $("whatif-add-at").textContent = "Not placed: no partner is added.";
    $("whatif-remove").value = "";
  }

  // the form starts afresh for each plan shown (partners left out belong to one plan)
  function renderWhatif() {
    var panel = $("whatif-panel");
    if (state.whatifFor !== (state.plan && state.plan.plan_id)) resetWhatif();
    state.whatifFor = state.plan && state.plan.plan_id;
    panel.hidden = !(canPlan() && state.plan && !isScenario(state.plan));
    $("partner-leave-out").hidden = panel.hidden;
    var select = $("whatif-add-category");
    var current = select.value;
    select.textContent = "";
    state.categories.forEach(function (cat) {
      select.appendChild(h("option", { value: cat, text: cat }));
    });
    if (state.categories.indexOf(current) >= 0) select.value = current;
  }

  function leaveOut(partnerId) {
    var box = $("whatif-remove");
    var ids = box.value.split(/[\s,;]+/).filter(Boolean);
    if (ids.indexOf(partnerId) < 0) ids.push(partnerId);
    box.value = ids.join(", ");
    setWhatifStatus(partnerLabel(partnerId) + " is left out of the what-if.");
    $("whatif-panel").scrollIntoView({ block: "nearest" });
  }

  function placeAddition(latlng) {
    latlng = latlng.wrap(); // a click on a copy of the world east or west of this one
    state.whatifAt = [Number(latlng.lat.toFixed(6)), Number(latlng.lng.toFixed(6))];
    if (state.whatifMarker) state.whatifMarker.setLatLng(latlng);
    else {
      state.whatifMarker = L.circleMarker(latlng, {
        pane: SELECTION_PANE, className: "mm-whatif-partner", radius: 9, color: "#000",
        weight: 2, dashArray: "3 3", fillColor: "#fff", fillOpacity: 0.9
      }).addTo(map);
    }
    $("whatif-add-at").textContent = "At " + state.whatifAt[0] + ", " + state.whatifAt[1] + ".";
    $("whatif-unplace").hidden = false;
  }

  function whatifRequest() {
    var body = {};
    var ids = $("whatif-remove").value.split(/[\s,;]+/).filter(Boolean);
    var unknown = ids.filter(function (id) { return !state.data.partners[id]; });
    if (unknown.length) {
      setWhatifStatus("Not a partner of this plan: " + unknown.join(", ") + ".", true);
      return null;
    }
    if (ids.length) body.remove_partners = ids;
    // the numbers' ranges are the API's (its answer names a field out of range)
    var scale = $("whatif-scale").value.trim();
    if (scale !== "") body.scale_capacity = Number(scale);
    var radius = $("whatif-radius").value.trim();
    if (radius !== "") body.radius_km = Number(radius);
    var capacity = Number($("whatif-add-capacity").value);
    var reach = Number($("whatif-add-radius").value);
    var numbers = [body.scale_capacity, body.radius_km].concat(state.whatifAt ? [capacity, reach] : []);
    if (numbers.some(function (x) { return x !== undefined && !Number.isFinite(x); })) {
      setWhatifStatus("Every figure of the what-if must be a number.", true);
      return null;
    }
    if (state.whatifAt) {
      var name = $("whatif-add-name").value.trim();
      body.add_partners = [{
        partner_id: "WHATIF-" + Date.now().toString(36).toUpperCase(),
        name: name || "new partner (what-if)",
        kind: "organization",
        lat: state.whatifAt[0],
        lon: state.whatifAt[1],
        categories: [$("whatif-add-category").value],
        capacity: capacity,
        radius_km: reach
      }];
    }
    if (!Object.keys(body).length) {
      setWhatifStatus("Change something first: leave out partners, scale capacity, change the " +
        "radius or add a partner.", true);
      return null;
    }
    return body;
  }

  function runWhatif(event) {
    event.preventDefault();
    var base = state.plan;
    var body = whatifRequest();
    if (!body || !base) return;
    var button = $("whatif-run");
    button.disabled = true;
    setWhatifStatus("Starting the what-if…");
    var nav = state.nav;
    api("plans/" + encodeURIComponent(base.plan_id) + "/scenarios", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (created) {
      setWhatifStatus("What-if " + shortId(created.plan_id) + " is running…");
      refreshPlans();
      return waitDone(created.plan_id).then(function (rec) {
        if (rec.status !== "done") {
          setWhatifStatus("What-if " + shortId(created.plan_id) + " " + rec.status + ": " +
            (rec.error || "no result"), true);
          return undefined;
        }
        if (!stillHere(nav)) {
          setWhatifStatus("What-if " + shortId(rec.plan_id) + " is done: show or compare it " +
            "from the list of plans.");
          refreshPlans();
          return undefined;
        }
        state.nav += 1;
        history.replaceState(null, "", "#plan=" + rec.plan_id);
        clearSelection();
        state.fitted = false; // the whole city: where the what-if changed things
        return loadPlan(rec).then(function () {
          setWhatifStatus("What-if " + shortId(rec.plan_id) + " is shown, compared with plan " +
            shortId(base.plan_id) + ".");
          return compareWith(base.plan_id);
        });
      });
    }).catch(function (err) {
      setWhatifStatus("Could not run the what-if: " + err.message, true);
    }).then(function () { button.disabled = false; });
  }

  // Poll a plan until it is done or failed, or POLL_LIMIT_MS have passed (then it resolves
  // with the plan as it is); ``onPending(rec)`` hears each answer while it is queued or running.
  function waitDone(planId, onPending) {
    var started = Date.now();
    return new Promise(function (resolve, reject) {
      function poll() {
        api("plans/" + encodeURIComponent(planId)).then(function (rec) {
          if (rec.status === "done" || rec.status === "failed") return resolve(rec);
          if (Date.now() - started > POLL_LIMIT_MS) return resolve(rec);
          if (onPending) onPending(rec);
          setTimeout(poll, POLL_MS);
          return undefined;
        }).catch(reject);
      }
      poll();
    });
  }

  // ------------------------------------------------------------------ plans and comparison

  var PLANS_SHOWN = 15;

  function when(rec) {
    var t = rec.finished_at || rec.created_at;
    return t ? String(t).replace("T", " ").replace(/:\d\d(\.\d+)?Z?$/, "") : "–";
  }

  function planWhat(rec) {
    var p = rec.parameters || {};
    if (rec.kind === "scenario") {
      return "what-if of " + shortId(rec.base_plan || (p.scenario || {}).base_plan);
    }
    var parts = [(p.objective || "default") + ", " + fmt(p.cluster_km, 2) + " km"];
    if (p.min_coverage) parts.push("floor " + pct(p.min_coverage));
    if (p.recruit) parts.push("recruit " + p.recruit.k);
    return parts.join(", ");
  }

  // the list of plans: each can be shown, or compared with the plan shown
  function refreshPlans() {
    if (!state.key) return Promise.resolve();
    // the plan in force may be older than the plans listed: asked for on its own
    api("plans/latest").then(function (latest) {
      state.inForce = latest.plan ? latest.plan.plan_id : null;
    }).catch(function () { /* the list below says what went wrong */ });
    return api("plans?limit=" + PLANS_SHOWN).then(function (body) {
      var rows = body.results || [];
      var tbody = document.querySelector("#plans-table tbody");
      tbody.textContent = "";
      rows.forEach(function (rec) {
        var shown = state.plan && state.plan.plan_id === rec.plan_id;
        var head = h("td", null, h("code", { text: shortId(rec.plan_id), title: rec.plan_id }));
        if (rec.in_force) head.appendChild(h("span", { className: "badge in-force", text: "in force" }));
        if (shown) head.appendChild(h("span", { className: "badge shown", text: "shown" }));
        var headline = rec.headline || {};
        var actions = h("td", { className: "actions" });
        if (rec.status === "done" && rec.kind === "plan" && !rec.published_at && !rec.admin_only) {
          head.appendChild(h("span", { className: "badge draft", text: "draft" }));
          if (canPlan()) {
            actions.appendChild(jump("publish", function () { askPublish(rec); },
              { "data-publish": rec.plan_id }));
          }
        }
        if (rec.status === "done" && !shown && !(rec.admin_only && state.role !== "admin")) {
          actions.appendChild(jump("show", function () {
            window.location.hash = "plan=" + rec.plan_id;
          }, { "data-show": rec.plan_id }));
          if (state.plan) {
            actions.appendChild(jump("compare", function () { compareWith(rec.plan_id); },
              { "data-compare": rec.plan_id }));
          }
        }
        tbody.appendChild(h("tr", { "data-plan": rec.plan_id, className: "status-" + rec.status },
          head,
          h("td", { text: planWhat(rec) + (rec.status === "done" ? "" : " (" + rec.status + ")") }),
          h("td", { text: when(rec) }),
          h("td", { text: rec.created_by_role || rec.created_by || "–" }),
          h("td", { text: headline.coverage === undefined || headline.coverage === null ? "–"
            : pct(headline.coverage), title: headline.units_served === undefined ? "" :
            fmt(headline.units_served) + " of " + fmt(headline.units_demand) + " units" }),
          actions));
      });
      $("plans-panel").hidden = false;
      $("plans-status").textContent = rows.length ? "" : "No plan yet.";
    }).catch(function (err) {
      $("plans-status").textContent = "Could not list the plans: " + err.message;
    });
  }

  function signed(x, digits) { return (x > 0 ? "+" : "") + fmt(x, digits); }

  // Compare the shown plan with ``otherId``: what changes from that plan to this one
  function compareWith(otherId) {
    var shown = state.plan && state.plan.plan_id;
    if (!shown || otherId === shown) return Promise.resolve();
    var seq = ++state.compareSeq;
    state.nav += 1;
    $("plans-status").textContent = "Comparing…";
    return api("plans/" + encodeURIComponent(otherId) + "/compare/" + encodeURIComponent(shown))
      .then(function (cmp) {
        if (seq !== state.compareSeq || !state.plan || state.plan.plan_id !== shown) {
          if (seq === state.compareSeq) $("plans-status").textContent = "";
          return;
        }
        var rows = {};
        (cmp.clusters || []).forEach(function (r) { rows[r.cluster_id] = r; });
        state.comparison = { shown: shown, other: otherId, clusterRows: rows, body: cmp };
        renderComparison(cmp);
        drawLoadChanges(cmp.partners || []);
        var select = $("cluster-colour");
        select.querySelector('option[value="change"]').disabled = !cmp.clusters_comparable;
        state.clusterColour = cmp.clusters_comparable ? "change"
          : (state.clusterColour === "change" ? "share" : state.clusterColour);
        select.value = state.clusterColour;
        groups.clusters.setStyle(clusterStyle);
        renderLegend();
        $("plans-status").textContent = "";
        document.body.dataset.compared = otherId;
      }).catch(function (err) {
        $("plans-status").textContent = "Could not compare: " + err.message;
      });
  }

  function renderComparison(cmp) {
    var t = cmp.totals || {};
    var before = cmp.a || {};
    var now = cmp.b || {};
    $("compare-title").textContent = "Before: plan " + shortId(before.plan_id) +
      (before.kind === "scenario" ? " (a what-if)" : "") + ". Now: plan " + shortId(now.plan_id) +
      (now.kind === "scenario" ? " (a what-if)" : "") + ", the one shown.";
    var dl = $("compare-facts");
    dl.textContent = "";
    fact(dl, "units served", fmt(t.units_served_a) + " → " + fmt(t.units_served_b) + " (" +
      signed(t.units_served_delta) + ")");
    fact(dl, "units unmet", fmt(t.units_unmet_a) + " → " + fmt(t.units_unmet_b));
    fact(dl, "coverage", pct(t.coverage_a) + " → " + pct(t.coverage_b));
    if (cmp.clusters_comparable) {
      fact(dl, "clusters", fmt(t.clusters_gained, 0) + " served more, " +
        fmt(t.clusters_lost, 0) + " served less, " + fmt(t.clusters_same, 0) + " unchanged");
    }
    fact(dl, "partners", fmt(t.partners_changed, 0) + " with another load");
    var note = $("compare-note");
    note.hidden = !!cmp.clusters_comparable;
    note.textContent = cmp.clusters_comparable ? "" : (cmp.reason ||
      "The two plans' clusters differ: they are compared by neighborhood and partner only.");
    var hoods = (cmp.neighborhoods || []).filter(function (r) { return r.delta_served !== 0; })
      .sort(function (a, b) {
        return (Math.abs(b.delta_served) - Math.abs(a.delta_served)) ||
          (a.neighborhood_id < b.neighborhood_id ? -1 : 1);
      });
    var tbody = document.querySelector("#compare-hoods tbody");
    tbody.textContent = "";
    hoods.slice(0, LIST_LIMIT).forEach(function (r) {
      tbody.appendChild(h("tr", { "data-hood": r.neighborhood_id,
        className: r.delta_served > 0 ? "gained" : "lost" },
        h("td", null, jump((r.name || r.neighborhood_id), function () {
          selectNeighborhood(r.neighborhood_id);
        })),
        h("td", { text: fmt(r.served_a) }), h("td", { text: fmt(r.served_b) }),
        h("td", { text: signed(r.delta_served) }), h("td", { text: pct(r.coverage_b) })));
    });
    if (!hoods.length) {
      tbody.appendChild(h("tr", null, h("td", { colSpan: 5, text: "No neighborhood changed." })));
    }
    var partners = (cmp.partners || []).slice().sort(function (a, b) {
      return (Math.abs(b.delta) - Math.abs(a.delta)) || (a.partner_id < b.partner_id ? -1 : 1);
    });
    var pbody = document.querySelector("#compare-partners tbody");
    pbody.textContent = "";
    $("compare-partners-head").textContent = "Partners whose load changed (" +
      fmt(partners.length, 0) + ")";
    partners.slice(0, LIST_LIMIT).forEach(function (r) {
      var cell = state.data.partners[r.partner_id]
        ? h("td", null, jump(r.name || r.partner_id, function () { selectPartner(r.partner_id); }))
        : h("td", { text: (r.name || r.partner_id) + " (not in this plan)" });
      pbody.appendChild(h("tr", { "data-partner": r.partner_id }, cell,
        h("td", { text: r.units_a === null ? "–" : fmt(r.units_a) }),
        h("td", { text: r.units_b === null ? "–" : fmt(r.units_b) }),
        h("td", { text: signed(r.delta) })));
    });
    $("compare-panel").hidden = false;
    $("compare-panel").scrollIntoView({ block: "nearest" });
  }

  // partners whose load changed, on the map: a ring by the size of the change, green for
  // more units carried in the plan shown, red for fewer
  function drawLoadChanges(all) {
    var layer = groups.loadChanges;
    layer.clearLayers();
    // the largest changes only: when every capacity changes, every partner's load does
    var rows = all.filter(function (r) {
      return state.data.partnerFeatures[r.partner_id] && Math.abs(r.delta) > 0;
    }).sort(function (a, b) {
      return (Math.abs(b.delta) - Math.abs(a.delta)) || (a.partner_id < b.partner_id ? -1 : 1);
    }).slice(0, LOAD_RINGS);
    state.comparison.rings = rows.length;
    var max = 0;
    rows.forEach(function (r) { max = Math.max(max, Math.abs(r.delta)); });
    rows.forEach(function (r) {
      var f = state.data.partnerFeatures[r.partner_id]; // one left out is in the table only
      if (!f || !(Math.abs(r.delta) > 0)) return;
      var c = f.geometry.coordinates;
      var ring = L.circleMarker([c[1], c[0]], {
        pane: SELECTION_PANE,
        className: "mm-load-change " + (r.delta > 0 ? "more" : "less"),
        radius: 4 + 10 * Math.sqrt(Math.abs(r.delta) / (max || 1)),
        color: r.delta > 0 ? CHANGE_COLORS.gained : CHANGE_COLORS.lost,
        weight: 2,
        fillOpacity: 0.15
      });
      ring.bindTooltip(function () {
        return tooltip([(r.name || r.partner_id) + " (" + r.partner_id + ")",
          "units carried " + fmt(r.units_a) + " → " + fmt(r.units_b) + " (" + signed(r.delta) + ")"]);
      });
      ring.on("click", function () { if (state.data.partners[r.partner_id]) selectPartner(r.partner_id); });
      ring.addTo(layer);
    });
    if (!map.hasLayer(layer)) layer.addTo(map);
  }

  function leaveComparison() {
    state.comparison = null;
    groups.loadChanges.clearLayers();
    $("compare-panel").hidden = true;
    var select = $("cluster-colour");
    select.querySelector('option[value="change"]').disabled = true;
    if (state.clusterColour === "change") state.clusterColour = "share";
    select.value = state.clusterColour;
    if (state.data) {
      groups.clusters.setStyle(clusterStyle);
      renderLegend();
    }
    delete document.body.dataset.compared;
  }

  // ------------------------------------------------------------------ impact

  function setImpactStatus(text, isError) { setStatus("impact-status", text, isError); }

  // a day as YYYY-MM-DD, ``back`` days before today (the browser's day)
  function isoDay(back) {
    var d = new Date();
    d.setDate(d.getDate() - back);
    return d.getFullYear() + "-" + String(d.getMonth() + 1).padStart(2, "0") + "-" +
      String(d.getDate()).padStart(2, "0");
  }

  // the form's windows at first: after = the 90 days ending today, before = the 90 before
  function defaultImpactWindows() {
    [["impact-before-start", 179], ["impact-before-end", 90], ["impact-after-start", 89],
      ["impact-after-end", 0]].forEach(function (w) {
      if (!$(w[0]).value) $(w[0]).value = isoDay(w[1]);
    });
  }

  // Compare the windows (GET impact); the API checks them, and its answer names a bad one.
  function runImpact(event) {
    event.preventDefault();
    var days = ["before-start", "before-end", "after-start", "after-end"].map(function (id) {
      return $("impact-" + id).value;
    });
    if (days.indexOf("") >= 0) {
      setImpactStatus("Give the first and last day of both windows.", true);
      return undefined;
    }
    var windows = ["before=" + encodeURIComponent(days[0] + ".." + days[1]),
      "after=" + encodeURIComponent(days[2] + ".." + days[3])];
    var seq = ++state.impactSeq;
    var button = $("impact-run");
    button.disabled = true;
    setImpactStatus("Comparing…");
    return api("impact?" + windows.join("&")).then(function (result) {
      if (seq !== state.impactSeq) return;
      state.impact = result;
      renderImpact(result);
      render(["impact"]);
      setImpactStatus("");
      document.body.dataset.impact = result.before.start + ".." + result.after.end;
    }).catch(function (err) {
      if (seq !== state.impactSeq) return;
      if (err.status === 403) { // not this key's to see: no panel, no layer
        state.impact = null;
        $("impact-panel").hidden = true;
        render(["impact"]);
        return;
      }
      setImpactStatus("Could not compare: " + err.message, true);
    }).then(function () { button.disabled = false; });
  }

  // the windows compared, one line per test (its caution set apart), method and caveats
  function renderImpact(r) {
    $("impact-windows").textContent = "Before: " + r.before.start + " to " + r.before.end +
      " (" + fmt(r.before.days, 0) + " days). After: " + r.after.start + " to " + r.after.end +
      " (" + fmt(r.after.days, 0) + " days).";
    var list = $("impact-tests");
    list.textContent = "";
    r.tests.forEach(function (t) {
      var li = h("li", { "data-measure": t.measure, "data-category": t.category },
        h("span", { className: "impact-conclusion",
          text: t.measure + ", " + t.category + ": " + t.conclusion }));
      if (t.caution) li.appendChild(h("p", { className: "impact-caution", text: t.caution }));
      list.appendChild(li);
    });
    $("impact-method").textContent = r.method;
    var notes = $("impact-caveats");
    notes.textContent = "";
    r.caveats.concat(r.notes).forEach(function (text) {
      notes.appendChild(h("li", { text: text }));
    });
    $("impact-result").hidden = false;
  }

  // ------------------------------------------------------------------ key handling

  function setKeyStatus(text, ok) {
    var s = $("key-status");
    s.textContent = text;
    s.className = "key-status " + (ok ? "ok" : "bad");
  }

  function useKey(key) {
    state.key = key;
    // the plan in force is asked for with the key check (one round trip less)
    var latest = requestedPlan() ? null : api("plans/latest");
    if (latest) latest.catch(function () { /* said by loadLatest, or the key is refused */ });
    return api("me").catch(function (err) {
      err.fromMe = true;
      throw err;
    }).then(function (me) {
      state.role = me.role;
      try { sessionStorage.setItem(KEY_STORE, key); } catch (e) { /* storage disabled */ }
      setKeyStatus("signed in as " + me.role, true);
      $("key-input").value = "";
      $("key-forget").hidden = false;
      // planners and admins plan; others are told who can
      $("run-panel").hidden = false;
      $("plan-form").hidden = !canPlan();
      $("plan-run").disabled = !canPlan();
      if (!canPlan()) setPlanStatus("Running a plan or a what-if needs a planner or admin key.");
      $("impact-panel").hidden = !canPlan();
      if (canPlan()) defaultImpactWindows();
      return loadLatest(latest);
    }).catch(function (err) {
      if (err.fromMe && (err.status === 401 || err.status === 403)) {
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
  $("publish-confirm-yes").addEventListener("click", confirmPublish);
  $("publish-confirm-no").addEventListener("click", cancelPublish);
  $("whatif-form").addEventListener("submit", runWhatif);
  $("partner-leave-out").addEventListener("click", function () {
    if (state.selection && state.selection.kind === "partner") leaveOut(state.selection.id);
  });
  $("compare-close").addEventListener("click", leaveComparison);
  $("impact-form").addEventListener("submit", runImpact);
  $("whatif-place").addEventListener("click", function () {
    state.placing = true;
    $("whatif-add-at").textContent = "Click the map where the new partner would be.";
  });
  $("whatif-unplace").addEventListener("click", function () {
    var removed = $("whatif-remove").value;
    resetWhatif();
    $("whatif-remove").value = removed;
  });
  map.on("click", function (e) {
    if (!$("whatif-panel").hidden && state.placing) {
      state.placing = false;
      placeAddition(e.latlng);
    }
  });
  ["cluster-close", "partner-close", "hood-close"].forEach(function (id) {
    $(id).addEventListener("click", clearSelection);
  });
  $("search-input").addEventListener("input", renderSearch);
  $("search-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var found = searchMatches($("search-input").value);
    if (found.length) choose(found[0]);
    else renderSearch();
  });
  $("cluster-colour").addEventListener("change", function () {
    state.clusterColour = $("cluster-colour").value;
    if (state.data) {
      groups.clusters.setStyle(clusterStyle);
      renderLegend();
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && state.data) clearSelection();
  });
  $("print-plan").addEventListener("click", function () { window.print(); });
  $("cat-all").addEventListener("click", function () { setAllCategories(true); });
  $("cat-none").addEventListener("click", function () { setAllCategories(false); });
  window.addEventListener("hashchange", function () {
    state.nav += 1;
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

  // the map settings and the saved key's plan are asked for at once
  api("map/config").then(function (cfg) {
    addBaseMap(cfg);
  }).catch(function (err) {
    $("base-status").textContent = "Could not read the map settings: " + err.message;
    $("base-status").hidden = false;
  });
  (function () {
    var saved = null;
    try { saved = sessionStorage.getItem(KEY_STORE); } catch (e) { saved = null; }
    document.body.dataset.state = "key";
    if (saved) useKey(saved);
  })();

  // how many shapes of a layer are drawn (canvas layers have no element per shape)
  function drawn(id) { return map.hasLayer(groups[id]) ? groups[id].getLayers().length : 0; }

  window.matcherMap = { map: map, state: state, groups: groups, selectCluster: selectCluster,
    drawn: drawn };
})();
