/*
 * What both pages of matcher (the planner map and the outreach page) share: building DOM
 * nodes with text only (never HTML from data) and the base map with its fallback.
 */
(function () {
  "use strict";

  /** Return a new element with attributes ("text": its textContent) and children. */
  function h(tag, attrs) {
    var node = document.createElement(tag);
    var a = attrs || {};
    Object.keys(a).forEach(function (k) {
      if (k === "text") node.textContent = a[k];
      else if (k === "className") node.className = a[k];
      else node.setAttribute(k, a[k]);
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  /**
   * Add the configured base-map tiles to a Leaflet map. Without a tile URL, say so in
   * `status`; when the tile server cannot be reached, stop asking it and say so (every data
   * layer stays). `texts.none` and `texts.unavailable` are the two messages.
   * document.body.dataset.baseMap is "requested" or "unavailable".
   */
  function addBaseMap(map, cfg, status, texts) {
    if (!cfg.tile_url) {
      status.textContent = texts.none;
      status.hidden = false;
      return;
    }
    var escaped = String(cfg.tile_attribution || "").replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
    var tiles = L.tileLayer(cfg.tile_url, { attribution: escaped, maxZoom: 19 });
    var loaded = 0;
    tiles.on("tileload", function () { loaded += 1; });
    tiles.on("tileerror", function () {
      if (loaded > 0 || !map.hasLayer(tiles)) return; // a gap in a working base map
      map.removeLayer(tiles);
      status.textContent = texts.unavailable;
      status.hidden = false;
      document.body.dataset.baseMap = "unavailable";
    });
    tiles.addTo(map);
    document.body.dataset.baseMap = "requested";
  }

  window.matcherWeb = { h: h, addBaseMap: addBaseMap };
})();
