/* meterd-chart.js: usage over time as a line chart (uPlot, vendored beside it) with
 * exact decimals in every label, and the same figures as a table.
 *
 * meterd's quantities are exact decimal strings. A chart must place points with
 * numbers, so the y position is parseFloat(value); but nothing a person reads
 * comes from that float: the legend and the table show the decimal string the API
 * gave, and totals are added as decimals (sumDecimals), never as floats.
 *
 *   MeterdChart.render(element, {
 *     series: [{label: "api_calls", points: [{start: "2026-11-01T00:00:00Z",
 *                                            end: "...", quantity: "12.5"}]}],
 *     unit: "calls", title: "Usage by day"})
 *
 * Returns {total: [exact total per series], destroy()}. Without uPlot (a page
 * that did not load it) only the table is drawn.
 */
(function (global) {
  "use strict";

  // --- exact decimal arithmetic on strings (non-negative or negative, any scale)
  function parseDecimal(text) {
    var s = String(text).trim();
    var negative = s.charAt(0) === "-";
    if (negative || s.charAt(0) === "+") s = s.slice(1);
    if (!/^\d+(\.\d+)?$/.test(s)) throw new Error("not a decimal: " + text);
    var parts = s.split(".");
    var frac = parts[1] || "";
    return { negative: negative, digits: BigInt(parts[0] + frac), scale: frac.length };
  }

  function formatDecimal(digits, scale) {
    var negative = digits < 0n;
    var s = (negative ? -digits : digits).toString();
    if (scale > 0) {
      while (s.length <= scale) s = "0" + s;
      s = s.slice(0, s.length - scale) + "." + s.slice(s.length - scale);
      s = s.replace(/0+$/, "").replace(/\.$/, "");
    }
    return (negative && s !== "0" ? "-" : "") + s;
  }

  function sumDecimals(values) {
    var scale = 0;
    var parsed = values.map(function (v) {
      var d = parseDecimal(v);
      if (d.scale > scale) scale = d.scale;
      return d;
    });
    var total = 0n;
    parsed.forEach(function (d) {
      var n = d.digits * 10n ** BigInt(scale - d.scale);
      total += d.negative ? -n : n;
    });
    return formatDecimal(total, scale);
  }

  function epochSeconds(iso) {
    return Date.parse(iso) / 1000;
  }

  var PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d"];

  // One x axis for every series: the union of the window starts, each series' exact
  // values on it (null where a series has no row: usage windows without usage are
  // left out by the API, so they are 0).
  function align(series) {
    var starts = {};
    series.forEach(function (s) {
      s.points.forEach(function (p) { starts[p.start] = true; });
    });
    var xs = Object.keys(starts).sort(function (a, b) { return epochSeconds(a) - epochSeconds(b); });
    var exact = series.map(function (s) {
      var byStart = {};
      s.points.forEach(function (p) { byStart[p.start] = p.quantity; });
      return xs.map(function (x) { return byStart[x] === undefined ? "0" : byStart[x]; });
    });
    return { xs: xs, exact: exact };
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function table(container, options, aligned) {
    var details = el("details", { "class": "meterd-chart-table" });
    details.appendChild(el("summary", {}, "Figures as a table"));
    var t = el("table", {});
    if (options.title) t.appendChild(el("caption", {}, options.title));
    var head = el("tr", {});
    head.appendChild(el("th", { scope: "col" }, "Window start"));
    options.series.forEach(function (s) { head.appendChild(el("th", { scope: "col" }, s.label)); });
    var thead = el("thead", {});
    thead.appendChild(head);
    t.appendChild(thead);
    var body = el("tbody", {});
    aligned.xs.forEach(function (x, i) {
      var row = el("tr", {});
      row.appendChild(el("th", { scope: "row" }, x));
      aligned.exact.forEach(function (values) { row.appendChild(el("td", { "data-exact": values[i] }, values[i])); });
      body.appendChild(row);
    });
    t.appendChild(body);
    var foot = el("tr", {});
    foot.appendChild(el("th", { scope: "row" }, "Total"));
    aligned.exact.forEach(function (values) {
      foot.appendChild(el("td", { "class": "meterd-chart-total" }, sumDecimals(values.length ? values : ["0"])));
    });
    var tfoot = el("tfoot", {});
    tfoot.appendChild(foot);
    t.appendChild(tfoot);
    details.appendChild(t);
    container.appendChild(details);
  }

  function render(container, options) {
    container.textContent = "";
    var aligned = align(options.series);
    var totals = aligned.exact.map(function (values) { return sumDecimals(values.length ? values : ["0"]); });
    var plot = null;
    if (global.uPlot && aligned.xs.length > 0) {
      var holder = el("div", { "class": "meterd-chart-plot", role: "img",
        "aria-label": (options.title || "usage over time") + ": totals " +
          options.series.map(function (s, i) { return s.label + " " + totals[i]; }).join(", ") });
      container.appendChild(holder);
      var data = [aligned.xs.map(epochSeconds)].concat(
        aligned.exact.map(function (values) { return values.map(function (v) { return parseFloat(v); }); })
      );
      var width = Math.max(280, container.clientWidth || 600);
      plot = new global.uPlot({
        width: width,
        height: options.height || 260,
        series: [{ value: function (u, v, sidx, idx) { return idx == null ? "--" : aligned.xs[idx]; } }].concat(
          options.series.map(function (s, i) {
            return {
              label: s.label,
              stroke: PALETTE[i % PALETTE.length],
              width: 2,
              points: { show: aligned.xs.length < 60 },
              // the legend shows the API's exact string, never the float drawn
              value: function (u, v, sidx, idx) { return idx == null ? totals[i] : aligned.exact[i][idx]; },
            };
          })
        ),
        axes: [{}, { values: function (u, ticks) { return ticks.map(function (t) { return String(t); }); } }],
      }, data, holder);
    }
    table(container, options, aligned);
    return {
      total: totals,
      destroy: function () { if (plot) plot.destroy(); },
    };
  }

  global.MeterdChart = { render: render, sumDecimals: sumDecimals, align: align };
})(window);
