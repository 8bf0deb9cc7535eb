/* portal.js: the customer portal page (/portal#token=...).
 *
 * The token travels in the URL's fragment, which a browser never sends to a
 * server (no access log, no Referer holds it); this script reads it and calls the
 * portal's JSON with it as a bearer token. Nothing is drawn before the API has
 * accepted the token: an expired or forged link shows a clear message, never data.
 *
 * Every figure a person reads is the API's exact decimal string. The only numbers
 * computed here are bar widths (a picture, not a figure) and the chart's point
 * positions (meterd-chart.js, which labels them with the exact strings).
 *
 * Theme: the query parameters accent, bg, fg, muted (hex colours), radius (a CSS
 * length) and font (a family name from a safe set of characters) set the CSS
 * variables of meterd.css. Anything else is ignored.
 */
(function () {
  "use strict";

  var main = document.getElementById("portal");
  var API = main.getAttribute("data-api");
  var DAYS = 30;

  // --- theme ------------------------------------------------------------------------
  var COLOUR = /^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$/;
  var LENGTH = /^(0|\d{1,3}(\.\d{1,2})?(px|rem|em|%))$/;
  var FONT = /^[A-Za-z0-9 ,'"-]{1,100}$/;
  var THEME = {
    accent: COLOUR, bg: COLOUR, fg: COLOUR, muted: COLOUR, radius: LENGTH, font: FONT,
  };

  function applyTheme(search) {
    var params = new URLSearchParams(search);
    Object.keys(THEME).forEach(function (name) {
      var value = params.get(name);
      if (value === null || !THEME[name].test(value)) return;
      if (THEME[name] === COLOUR && value.charAt(0) !== "#") value = "#" + value;
      document.documentElement.style.setProperty("--meterd-" + name, value);
    });
  }

  // --- small DOM helpers -----------------------------------------------------------------
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function show(nodes) {
    main.textContent = "";
    nodes.forEach(function (n) { main.appendChild(n); });
  }

  function message(title, text, kind) {
    show([el("section", { "class": "meterd-error portal-message", role: "alert", "data-kind": kind }, [
      el("h1", {}, [title]),
      el("p", {}, [text]),
    ])]);
  }

  var EXPIRED = ["This link has expired", "This link has expired: ask for a new one."];
  var INVALID = ["This link is not valid", "This link is not valid: check that it was copied whole, or ask for a new one."];

  // --- the API -------------------------------------------------------------------------
  function tokenOf(hash) {
    var params = new URLSearchParams(hash.replace(/^#/, ""));
    var token = params.get("token");
    return token && /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token) ? token : null;
  }

  function Refused(kind) { this.kind = kind; }

  function get(token, path, params) {
    var url = API + path + (params ? "?" + new URLSearchParams(params).toString() : "");
    return fetch(url, {
      headers: { Authorization: "Bearer " + token, Accept: "application/json" },
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    }).then(function (response) {
      if (response.ok) return response.json();
      return response.json().catch(function () { return {}; }).then(function (problem) {
        if (response.status === 401) {
          throw new Refused(problem.title === "Portal link expired" ? "expired" : "invalid");
        }
        throw new Refused(response.status === 400 ? "bad-request" : "unavailable");
      });
    });
  }

  // --- balances --------------------------------------------------------------------------
  function withUnits(value, units) {
    if (value === null || value === undefined) return "unlimited";
    return units ? value + " " + units : value;
  }

  // The share of the bar: a picture only (never printed). Exact strings in, a
  // percentage clamped to 0..100 out.
  function share(part, whole) {
    var p = parseFloat(part), w = parseFloat(whole);
    if (!(w > 0)) return p > 0 ? 100 : 0;
    return Math.max(0, Math.min(100, (p / w) * 100));
  }

  function figure(label, value, name) {
    return el("div", { "class": "portal-figure" }, [
      el("dt", {}, [label]),
      el("dd", { "class": "meterd-figure", "data-figure": name, "data-exact": value === null ? "" : value }, [value === null ? "unlimited" : value]),
    ]);
  }

  function meter(feature) {
    if (feature.quantity === null) return null;
    var over = !/^0+(\.0+)?$/.test(feature.overage);
    var bar = el("div", {
      "class": "meterd-meter" + (over ? " over" : ""),
      role: "img",
      "aria-label": "consumed " + withUnits(feature.consumed, feature.units) + " of " + withUnits(feature.quantity, feature.units),
    }, []);
    var used = el("span", { "class": "portal-used" }, []);
    used.style.width = share(feature.consumed, feature.quantity).toFixed(2) + "%";
    bar.appendChild(used);
    return bar;
  }

  function entitlementTable(feature) {
    var head = el("tr", {}, ["Period", "Quantity", "Consumed", "Held", "Remaining", "Overage", "State"].map(function (h, i) {
      return el("th", { scope: "col", "class": i > 0 && i < 6 ? "num" : "" }, [h]);
    }));
    var rows = feature.entitlements.map(function (e) {
      var period = e.period_start.slice(0, 10) + " to " + (e.period_end ? e.period_end.slice(0, 10) : "open");
      var quantity = e.quantity === null ? "unlimited" : e.quantity;
      if (e.rolled_over) quantity += " (" + e.rolled_over + " carried over)";
      var cells = [period, quantity, e.consumed, e.held, e.remaining === null ? "unlimited" : e.remaining, e.overage];
      var tr = el("tr", { "data-entitlement": e.entitlement_id }, cells.map(function (c, i) {
        return el(i === 0 ? "th" : "td", i === 0 ? { scope: "row" } : { "class": "num", "data-exact": c }, [c]);
      }));
      tr.appendChild(el("td", {}, [el("span", { "class": "meterd-state " + e.state }, [e.state])]));
      return tr;
    });
    return el("div", { "class": "meterd-scroll" }, [
      el("table", { "class": "portal-entitlements" }, [
        el("caption", { "class": "visually-hidden" }, ["Grants of " + feature.name]),
        el("thead", {}, [head]),
        el("tbody", {}, rows),
      ]),
    ]);
  }

  function featureCard(feature) {
    var title = feature.name && feature.name !== feature.feature ? feature.name : feature.feature;
    var card = el("article", { "class": "meterd-card portal-feature", "data-feature": feature.feature }, [
      el("h3", {}, [title, " ", el("span", { "class": "meterd-state " + feature.state }, [feature.state.replace(/_/g, " ")])]),
    ]);
    var bar = meter(feature);
    if (bar) card.appendChild(bar);
    card.appendChild(el("dl", { "class": "portal-figures" }, [
      figure("Consumed", feature.consumed, "consumed"),
      figure("Remaining", feature.remaining, "remaining"),
      figure("Included", feature.quantity, "quantity"),
      figure("Held", feature.held, "held"),
      figure("Overage", feature.overage, "overage"),
    ]));
    if (feature.units) card.appendChild(el("p", { "class": "meterd-muted portal-units" }, ["in " + feature.units]));
    card.appendChild(entitlementTable(feature));
    return card;
  }

  // --- usage chart -----------------------------------------------------------------------
  function seriesOf(usage, overview) {
    var features = {};
    overview.features.forEach(function (f) { features[f.feature] = f; });
    var perFeature = {};
    usage.data.forEach(function (row) {
      perFeature[row.feature] = perFeature[row.feature] || {};
      perFeature[row.feature][row.entitlement_id] = true;
    });
    var series = {};
    var order = [];
    usage.data.forEach(function (row) {
      var key = row.feature + "|" + row.entitlement_id;
      if (!series[key]) {
        var f = features[row.feature];
        var label = f && f.name ? f.name : row.feature;
        if (row.filters) {
          label += " (" + Object.keys(row.filters).sort().map(function (k) { return k + "=" + row.filters[k]; }).join(", ") + ")";
        } else if (Object.keys(perFeature[row.feature]).length > 1) {
          label += " (grant " + String(row.entitlement_id).slice(0, 8) + ")";
        }
        series[key] = { label: label, points: [] };
        order.push(key);
      }
      series[key].points.push({ start: row.window_start, end: row.window_end, quantity: row.quantity });
    });
    return order.map(function (k) { return series[k]; });
  }

  // Days are UTC days: their starts are exact strings ("2026-12-04T00:00:00+00:00",
  // as the API writes them), so a day without usage (the API leaves it out) can be
  // drawn as the 0 it is, not as a line from one used day to the next.
  function dayStart(date) {
    return date.toISOString().slice(0, 10) + "T00:00:00+00:00";
  }

  function usageRange() {
    var now = new Date();
    var first = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() - (DAYS - 1)));
    return { from: first.toISOString(), to: now.toISOString(), window: "DAY", tz: "UTC", group_by: "entitlement" };
  }

  function everyDay(range) {
    var days = [];
    var day = new Date(range.from);
    var end = new Date(range.to);
    while (day < end) {
      var next = new Date(day.getTime() + 24 * 3600 * 1000);
      days.push({ start: dayStart(day), end: dayStart(next) });
      day = next;
    }
    return days;
  }

  function withEmptyDays(series, days) {
    series.forEach(function (s) {
      var seen = {};
      s.points.forEach(function (p) { seen[p.start] = true; });
      days.forEach(function (d) { if (!seen[d.start]) s.points.push({ start: d.start, end: d.end, quantity: "0" }); });
    });
    return series;
  }

  // --- the page ----------------------------------------------------------------------------
  function render(overview, usage, days) {
    var header = el("header", { "class": "portal-head" }, [
      el("h1", {}, ["Your usage"]),
      el("p", { "class": "meterd-muted" }, [
        "Account ", el("strong", { "data-customer": "" }, [overview.customer_id]),
        ". Figures are live; this link works until " + overview.expires_at.replace("T", " ").slice(0, 16) + " UTC.",
      ]),
    ]);
    var balances = el("section", { "aria-labelledby": "portal-balances" }, [
      el("h2", { id: "portal-balances" }, ["Balances"]),
    ]);
    if (overview.features.length === 0) {
      balances.appendChild(el("p", { "class": "meterd-muted" }, ["Nothing is metered for this account yet."]));
    } else {
      balances.appendChild(el("div", { "class": "meterd-cards portal-cards" }, overview.features.map(featureCard)));
    }
    var chartBox = el("div", { "class": "portal-chart", id: "portal-chart" }, []);
    var chart = el("section", { "aria-labelledby": "portal-usage" }, [
      el("h2", { id: "portal-usage" }, ["Usage by day, last " + DAYS + " days"]),
      el("p", { "class": "meterd-muted" }, ["Days in UTC."]),
      chartBox,
    ]);
    show([header, balances, chart]);
    var series = seriesOf(usage, overview);
    if (series.length === 0) {
      chartBox.appendChild(el("p", { "class": "meterd-muted" }, ["No usage in the last " + DAYS + " days."]));
    } else {
      var units = overview.features.length === 1 ? overview.features[0].units : "";
      window.MeterdChart.render(chartBox, { series: withEmptyDays(series, days), title: "Usage by day (UTC)", unit: units });
    }
    main.setAttribute("data-ready", "true");
  }

  function start() {
    applyTheme(window.location.search);
    var token = tokenOf(window.location.hash);
    if (!token) {
      message(INVALID[0], INVALID[1], "invalid");
      return;
    }
    var range = usageRange();
    get(token, "/overview").then(function (overview) {
      return get(token, "/usage", range).then(function (usage) { render(overview, usage, everyDay(range)); });
    }).catch(function (err) {
      if (err instanceof Refused && err.kind === "expired") message(EXPIRED[0], EXPIRED[1], "expired");
      else if (err instanceof Refused && err.kind === "invalid") message(INVALID[0], INVALID[1], "invalid");
      else message("Your usage could not be loaded", "Please try again in a moment.", "unavailable");
    });
  }

  window.addEventListener("hashchange", start);
  start();
})();
