/* console.js: meterd's operator console, a client of the /v1 API and nothing else.
 *
 * The operator signs in with an API key; it is kept in this tab's sessionStorage
 * (never localStorage: closing the tab forgets it) and sent as x-api-key on every
 * call. The key's permissions decide what each section shows: a 403 is shown in
 * that section as "your key lacks <permission>", the other sections still work.
 *
 * Quantities are the API's exact decimal strings, shown as they came; a sum is
 * made with MeterdChart.sumDecimals (BigInt), never with floats. Event data and
 * dead-letter payloads are re-read keeping each JSON number's source text.
 *
 * Views (hash routes): #/customers, #/customer/<id>, #/dead-letters, #/holds,
 * #/alert-rules, #/deliveries, #/health.
 */
(function () {
  "use strict";

  var KEY = "meterd.console.key";
  var ROOT = document.body.getAttribute("data-root") || "";
  var main = document.getElementById("console-main");
  var nav = document.getElementById("console-nav");
  var statusLine = document.getElementById("console-status");

  // ---------------------------------------------------------------- the key
  function apiKey() { return window.sessionStorage.getItem(KEY); }
  function signOut(message) {
    window.sessionStorage.removeItem(KEY);
    renderSignIn(message);
  }

  // ---------------------------------------------------------------- DOM helpers
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (attrs[k] === null || attrs[k] === undefined || attrs[k] === false) return;
      if (k === "text") node.textContent = attrs[k];
      else if (k === "on") Object.keys(attrs.on).forEach(function (e) { node.addEventListener(e, attrs.on[e]); });
      else node.setAttribute(k, attrs[k] === true ? "" : attrs[k]);
    });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function text(value) { return value === null || value === undefined ? "—" : String(value); }
  function say(message) { statusLine.textContent = message; }
  function section(title, id) {
    var body = el("div", { "class": "console-body" });
    var node = el("section", { "class": "console-section meterd-card", id: id, "aria-labelledby": id + "-title" },
      [el("h3", { id: id + "-title", text: title }), body]);
    return { node: node, body: body };
  }
  function table(headers, rows, caption) {
    var head = el("tr", {}, headers.map(function (h) {
      return el("th", { scope: "col", "class": h.num ? "num" : null, text: h.label || h });
    }));
    var t = el("table", {}, [caption ? el("caption", { "class": "visually-hidden", text: caption }) : null,
      el("thead", {}, [head]), el("tbody", {}, rows)]);
    return el("div", { "class": "meterd-scroll" }, [t]);
  }
  function cell(value, attrs) {
    var a = attrs || {};
    return el("td", { "class": a.num ? "num" : a["class"] || null, "data-field": a.field || null,
      "data-exact": a.exact ? text(value) : null }, [value instanceof Node ? value : text(value)]);
  }
  function stateBadge(state) { return el("span", { "class": "meterd-state " + state, text: state }); }
  // An event id as a person reads it: a correction's id is "<event><U+001E><n>" and a
// raw event's item "<event><U+001F><feature>" (core/corrections.py, meters.py); the
// exact id stays in the element's title.
function readableId(id) {
  return String(id).replace(/\u001e/g, " correction #").replace(/\u001f/g, " \u00b7 ");
}

function shortId(id) { return id ? String(id).slice(0, 8) : "—"; }

  // ---------------------------------------------------------------- exact JSON
  // A number of event data or a payload keeps its source text (JSON.parse's
  // reviver context, where the browser gives it): 0.10 is shown as 0.10.
  function RawNumber(source) { this.source = source; }
  RawNumber.prototype.toString = function () { return this.source; };
  function parseExact(body) {
    return JSON.parse(body, function (key, value, context) {
      if (typeof value === "number" && context && typeof context.source === "string") {
        return new RawNumber(context.source);
      }
      return value;
    });
  }
  function showJson(value, indent) {
    var pad = indent || "";
    var inner = pad + "  ";
    if (value instanceof RawNumber) return value.source;
    if (Array.isArray(value)) {
      if (!value.length) return "[]";
      return "[\n" + value.map(function (v) { return inner + showJson(v, inner); }).join(",\n") + "\n" + pad + "]";
    }
    if (value && typeof value === "object") {
      var keys = Object.keys(value);
      if (!keys.length) return "{}";
      return "{\n" + keys.map(function (k) {
        return inner + JSON.stringify(k) + ": " + showJson(value[k], inner);
      }).join(",\n") + "\n" + pad + "}";
    }
    return JSON.stringify(value);
  }
  function jsonBlock(value, summary) {
    return el("details", {}, [el("summary", { text: summary || "JSON" }),
      el("pre", { "class": "console-json", text: showJson(value) })]);
  }

  // ---------------------------------------------------------------- the API
  function Lacks(permission, detail) { this.permission = permission; this.detail = detail; }
  function ApiError(status, detail) { this.status = status; this.detail = detail; }
  ApiError.prototype.toString = function () { return this.status + ": " + this.detail; };

  function query(params) {
    var parts = [];
    Object.keys(params).forEach(function (k) {
      var v = params[k];
      if (v === null || v === undefined || v === "") return;
      parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(v));
    });
    return parts.length ? "?" + parts.join("&") : "";
  }

  // Resolves to {body: parsed JSON, text: the body as sent}; rejects with Lacks
  // (403), ApiError (any other failure); a 401 signs out.
  function api(method, path, body, exact) {
    var headers = { "x-api-key": apiKey() || "", accept: "application/json" };
    var init = { method: method, headers: headers, credentials: "omit", cache: "no-store" };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return window.fetch(ROOT + path, init).then(function (response) {
      return response.text().then(function (raw) {
        var parsed = null;
        if (raw) {
          try { parsed = exact ? parseExact(raw) : JSON.parse(raw); } catch (e) { parsed = null; }
        }
        if (response.ok) return { body: parsed, text: raw };
        var detail = parsed && parsed.detail ? String(parsed.detail) : response.statusText;
        if (response.status === 401) {
          signOut("Signed out: " + detail);
          throw new ApiError(401, detail);
        }
        if (response.status === 403) {
          var m = /lacks the (\S+) permission/.exec(detail);
          throw new Lacks(m ? m[1] : "a permission", detail);
        }
        throw new ApiError(response.status, detail);
      });
    }, function (err) {
      throw new ApiError(0, "the API did not answer: " + err);
    });
  }

  // What a section shows when its call failed.
  function failure(container, err) {
    container.textContent = "";
    if (err instanceof Lacks) {
      container.appendChild(el("p", { "class": "console-lacks", "data-lacks": err.permission, title: err.detail },
        ["Your key lacks " + err.permission + ": this section needs a key that holds it."]));
    } else if (err instanceof ApiError) {
      if (err.status === 401) return;
      container.appendChild(el("p", { "class": "meterd-error", role: "alert", text: String(err) }));
    } else {
      container.appendChild(el("p", { "class": "meterd-error", role: "alert", text: "The console failed: " + err }));
      if (window.console) window.console.error(err);
    }
  }
  function load(container, promise, draw) {
    container.textContent = "";
    container.appendChild(el("p", { "class": "meterd-muted", text: "Loading…" }));
    return promise.then(function (result) {
      container.textContent = "";
      draw(result.body, result);
    }).catch(function (err) { failure(container, err); });
  }

  // ---------------------------------------------------------------- the frame
  function page(title, sectionName) {
    nav.hidden = false;
    Array.prototype.forEach.call(nav.querySelectorAll("a"), function (a) {
      if (a.getAttribute("data-section") === sectionName) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    main.textContent = "";
    var h = el("h2", { text: title });
    main.appendChild(h);
    document.title = title + " · meterd console";
    return main;
  }

  function renderSignIn(message) {
    nav.hidden = true;
    main.textContent = "";
    document.title = "Sign in · meterd console";
    var input = el("input", { id: "console-key", name: "key", type: "password", autocomplete: "off",
      spellcheck: "false", required: true });
    var form = el("form", { "class": "console-signin meterd-card", id: "console-signin" }, [
      el("h2", { text: "Sign in" }),
      el("p", { "class": "console-note", text: "With an API key of your org (meterd keys create). It stays in this "
        + "tab only and is sent to this server's /v1 API, which decides by its permissions what you see." }),
      message ? el("p", { "class": "meterd-error", role: "alert", text: message }) : null,
      el("label", { "for": "console-key" }, ["API key", input]),
      el("button", { type: "submit", "class": "meterd-button", text: "Sign in" }),
    ]);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var key = input.value.trim();
      if (!key) return;
      window.sessionStorage.setItem(KEY, key);
      if (location.hash && location.hash !== "#/" && location.hash !== "#/sign-in") route();
      else location.hash = "#/customers";
    });
    main.appendChild(form);
    input.focus();
  }

  // ---------------------------------------------------------------- customers
  function customersView(params) {
    var root = page("Customers", "customers");
    var prefix = params.get("prefix") || "";
    var cursor = params.get("cursor") || "";
    var input = el("input", { id: "customer-prefix", name: "prefix", type: "search", value: prefix,
      autocomplete: "off" });
    var form = el("form", { "class": "meterd-form", role: "search" }, [
      el("label", { "for": "customer-prefix" }, ["Customer id starts with", input]),
      el("button", { type: "submit", "class": "meterd-button", text: "Search" }),
    ]);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      location.hash = "#/customers" + query({ prefix: input.value.trim() });
    });
    root.appendChild(form);
    var list = section("Customers of your org", "customers-list");
    root.appendChild(list.node);
    load(list.body, api("GET", "/v1/customers" + query({ prefix: prefix, cursor: cursor, limit: 50 })), function (body) {
      if (!body.data.length) {
        list.body.appendChild(el("p", { text: prefix ? "No customer id starts with " + prefix + "." : "No customer has an entitlement yet." }));
      } else {
        list.body.appendChild(table(["Customer", { label: "Entitlements", num: true }], body.data.map(function (c) {
          return el("tr", {}, [
            cell(el("a", { href: "#/customer/" + encodeURIComponent(c.customer_id), text: c.customer_id })),
            cell(c.entitlements, { num: true }),
          ]);
        }), "Customers"));
      }
      var pager = el("div", { "class": "console-pager" });
      if (cursor) pager.appendChild(el("a", { href: "#/customers" + query({ prefix: prefix }), text: "First page" }));
      if (body.next) pager.appendChild(el("a", { href: "#/customers" + query({ prefix: prefix, cursor: body.next }), text: "Next page" }));
      list.body.appendChild(pager);
    });
  }

  // ---------------------------------------------------------------- one customer
  function isoDay(date) { return date.toISOString().slice(0, 10); }
  function localZone() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch (e) { return "UTC"; }
  }

  function customerView(customerId, params) {
    var root = page("Customer " + customerId, "customers");
    root.appendChild(el("p", {}, [el("a", { href: "#/customers", text: "← All customers" })]));
    var balances = section("Entitlements and live balances", "customer-balances");
    var usage = section("Usage over time", "customer-usage");
    var events = section("The events behind the figures", "customer-events");
    root.appendChild(balances.node);
    root.appendChild(usage.node);
    root.appendChild(events.node);
    var labels = {};
    var entitlements = api("GET", "/v1/entitlements" + query({ customer_id: customerId, limit: 200 }));
    load(balances.body, entitlements, function (body) { drawBalances(balances.body, customerId, body.results, labels); });
    entitlements.catch(function () { return null; }).then(function () {
      usageForm(usage.body, events.body, customerId, params, labels);
    });
  }

  function entitlementLabel(feature, id, filters) {
    var dims = filters ? Object.keys(filters).map(function (k) { return k + "=" + filters[k]; }).join(",") : "";
    return feature + (dims ? " [" + dims + "]" : "") + " · " + shortId(id);
  }

  function drawBalances(container, customerId, results, labels) {
    if (!results.length) {
      container.appendChild(el("p", { text: "No entitlement names this customer." }));
      return;
    }
    var features = [];
    results.forEach(function (e) {
      labels[e.id] = entitlementLabel(e.feature, e.id, e.filters);
      if (features.indexOf(e.feature) < 0) features.push(e.feature);
    });
    container.appendChild(el("p", { "class": "console-note", text: "Live: flushed consumption plus what Redis "
      + "still holds (GET /v1/customers/{customer}/features/{feature}). Held: units live holds keep." }));
    features.forEach(function (feature) {
      var box = el("div", { "class": "console-feature", "data-feature": feature });
      container.appendChild(box);
      var path = "/v1/customers/" + encodeURIComponent(customerId) + "/features/" + encodeURIComponent(feature);
      load(box, api("GET", path), function (value) {
        var byId = {};
        results.forEach(function (e) { byId[e.id] = e; });
        box.appendChild(el("h4", {}, [feature + " ", stateBadge(value.state)]));
        box.appendChild(el("dl", { "class": "console-facts console-feature-total" }, [
          el("dt", { text: "quantity" }), el("dd", { "data-field": "quantity", text: text(value.quantity === null ? "unlimited" : value.quantity) }),
          el("dt", { text: "consumed" }), el("dd", { "data-field": "consumed", text: value.consumed }),
          el("dt", { text: "held" }), el("dd", { "data-field": "held", text: value.held }),
          el("dt", { text: "remaining" }), el("dd", { "data-field": "remaining", text: text(value.remaining === null ? "unlimited" : value.remaining) }),
          el("dt", { text: "overage" }), el("dd", { "data-field": "overage", text: value.overage }),
        ]));
        var rows = value.entitlements.map(function (b) {
          var e = byId[b.entitlement_id] || {};
          return el("tr", { "data-entitlement": b.entitlement_id }, [
            cell(el("span", { "class": "console-id", title: b.entitlement_id, text: labels[b.entitlement_id] || shortId(b.entitlement_id) })),
            cell(stateBadge(b.state)),
            cell(b.period_start + (e.ends_at ? " → " + e.ends_at : "")),
            cell(b.quantity === null ? "unlimited" : b.quantity, { num: true, field: "quantity" }),
            cell(b.consumed, { num: true, field: "consumed" }),
            cell(b.held, { num: true, field: "held" }),
            cell(b.remaining === null ? "unlimited" : b.remaining, { num: true, field: "remaining" }),
            cell(b.overage, { num: true, field: "overage" }),
            cell(e.billing_type || "—"),
          ]);
        });
        box.appendChild(table(["Entitlement", "State", "Period", { label: "Quantity", num: true },
          { label: "Consumed", num: true }, { label: "Held", num: true }, { label: "Remaining", num: true },
          { label: "Overage", num: true }, "Billing"], rows, feature + " entitlements"));
      });
    });
  }

  function usageForm(chartBox, eventsBox, customerId, params, labels) {
    var now = new Date();
    var week = new Date(now.getTime() - 6 * 86400000);
    var tomorrow = new Date(now.getTime() + 86400000);
    var fields = {
      from: el("input", { id: "usage-from", type: "date", required: true, value: params.get("from") || isoDay(week) }),
      to: el("input", { id: "usage-to", type: "date", required: true, value: params.get("to") || isoDay(tomorrow) }),
      window: el("select", { id: "usage-window" }, ["HOUR", "DAY", "MONTH"].map(function (w) {
        return el("option", { value: w, selected: (params.get("window") || "DAY") === w, text: w.toLowerCase() });
      })),
      tz: el("input", { id: "usage-tz", type: "text", value: params.get("tz") || localZone(), autocomplete: "off", size: "16" }),
    };
    var form = el("form", { "class": "meterd-form", id: "usage-form" }, [
      el("label", { "for": "usage-from" }, ["From (day, in the zone)", fields.from]),
      el("label", { "for": "usage-to" }, ["To (exclusive)", fields.to]),
      el("label", { "for": "usage-window" }, ["Window", fields.window]),
      el("label", { "for": "usage-tz" }, ["Time zone (IANA)", fields.tz]),
      el("button", { type: "submit", "class": "meterd-button", text: "Show" }),
    ]);
    var chart = el("div", { "class": "console-chart", id: "usage-chart" });
    chartBox.appendChild(form);
    chartBox.appendChild(el("p", { "class": "console-note", text: "GET /v1/usage grouped by entitlement: one line "
      + "per entitlement (a per-model limit is its own line). Figures are the flushed usage: at most one flush interval behind the live balance." }));
    chartBox.appendChild(chart);
    var drawn = null;
    function show() {
      var tz = fields.tz.value.trim() || "UTC";
      var range = rangeOf(fields.from.value, fields.to.value, tz);
      if (!range) return;
      var request = { from: range.from, to: range.to, window: fields.window.value, tz: tz };
      if (drawn) { drawn.destroy(); drawn = null; }
      load(chart, api("GET", "/v1/usage" + query({ customer_id: customerId, from: request.from, to: request.to,
        window: request.window, tz: request.tz, group_by: "entitlement" })), function (body) {
        drawn = drawUsage(chart, body, labels);
        eventsView(eventsBox, customerId, body);
      });
    }
    form.addEventListener("submit", function (event) { event.preventDefault(); show(); });
    show();
  }

  // The form's days as an RFC 3339 range, each from midnight in the chosen zone
  // (its UTC offset on that day, from the browser's time zone data; UTC if the
  // browser does not know the zone: the API then names the zone in a 400).
  function offsetOn(day, tz) {
    try {
      var parts = new Intl.DateTimeFormat("en-US", { timeZone: tz, timeZoneName: "longOffset" })
        .formatToParts(new Date(day + "T12:00:00Z"));
      var name = parts.filter(function (p) { return p.type === "timeZoneName"; })[0].value;
      var m = /^GMT([+-]\d{2}):?(\d{2})?$/.exec(name);
      return m ? m[1] + ":" + (m[2] || "00") : "Z";
    } catch (e) {
      return "Z";
    }
  }
  function rangeOf(fromDay, toDay, tz) {
    if (!fromDay || !toDay) return null;
    return { from: fromDay + "T00:00:00" + offsetOn(fromDay, tz), to: toDay + "T00:00:00" + offsetOn(toDay, tz) };
  }

  function drawUsage(container, body, labels) {
    var byEntitlement = {};
    var order = [];
    body.data.forEach(function (row) {
      var key = row.entitlement_id || row.feature || "usage";
      if (!byEntitlement[key]) {
        byEntitlement[key] = { label: labels[key] || entitlementLabel(row.feature, row.entitlement_id, row.filters), points: [] };
        order.push(key);
      }
      byEntitlement[key].points.push({ start: row.window_start, end: row.window_end, quantity: row.quantity });
    });
    container.appendChild(el("p", { "class": "console-note", text: "Counted from " + body.from + " to " + body.to
      + " (" + body.tz + ", by " + body.window.toLowerCase() + ")." }));
    if (!order.length) {
      container.appendChild(el("p", { text: "No usage in this range." }));
      return null;
    }
    var holder = el("div", {});
    container.appendChild(holder);
    return window.MeterdChart.render(holder, {
      series: order.map(function (k) { return byEntitlement[k]; }),
      title: "Usage by " + body.window.toLowerCase() + " (" + body.tz + ")",
    });
  }

  // The events of the chart's range, or of one of its windows: their quantities
  // add up to the figure shown (corrections are rows of their own, as the API
  // gives them).
  function eventsView(container, customerId, usage) {
    container.textContent = "";
    var windows = {};
    usage.data.forEach(function (row) { windows[row.window_start] = row.window_end; });
    var starts = Object.keys(windows).sort(function (a, b) { return Date.parse(a) - Date.parse(b); });
    var pick = el("select", { id: "events-window" }, [el("option", { value: "", text: "the whole range" })].concat(
      starts.map(function (s) { return el("option", { value: s, text: s }); })));
    var form = el("form", { "class": "meterd-form", id: "events-form" }, [
      el("label", { "for": "events-window" }, ["Explain", pick]),
      el("button", { type: "submit", "class": "meterd-button", text: "Show the events" }),
    ]);
    var list = el("div", { id: "events-list" });
    container.appendChild(form);
    container.appendChild(list);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var from = pick.value || usage.from;
      var to = pick.value ? windows[pick.value] : usage.to;
      eventsPage(list, customerId, from, to, null, {});
    });
  }

  function eventsPage(list, customerId, from, to, cursor, shown) {
    var request = api("GET", "/v1/events" + query({ customer_id: customerId, from: from, to: to, cursor: cursor, limit: 200 }), undefined, true);
    var box = el("div", {});
    if (!cursor) { list.textContent = ""; }
    list.appendChild(box);
    load(box, request, function (body) {
      body.data.forEach(function (e) { (shown[e.feature] = shown[e.feature] || []).push(e.quantity); });
      var rows = body.data.map(function (e) {
        var correction = null;
        if (e.correction) {
          var why = e.data && e.data.correction ? e.data.correction : null;
          correction = el("span", { "class": "console-correction", text: "correction #" + e.correction.number
            + " of " + e.correction.of + (why && why.kind ? " (" + why.kind + ")" : "") + (why && why.reason ? ": " + why.reason : "") });
        }
        return el("tr", {}, [
          cell(e.time), cell(el("span", { "class": "console-id", title: e.id, text: e.source + " " + readableId(e.id) })),
          cell(e.feature), cell(el("span", { "class": "console-id", title: String(e.entitlement_id), text: shortId(e.entitlement_id) })),
          cell(e.quantity, { num: true, exact: true, field: "quantity" }), cell(e.event_quantity, { num: true }),
          cell(String(e.part)), cell(correction || (e.data !== null && e.data !== undefined ? jsonBlock(e.data, "data") : "—")),
        ]);
      });
      if (rows.length) {
        box.appendChild(table(["Time", "Event", "Feature", "Entitlement", { label: "Counted", num: true },
          { label: "Event quantity", num: true }, "Part", "Correction / data"], rows, "Events"));
      } else if (!cursor) {
        box.appendChild(el("p", { text: "No counted event in " + from + " – " + to + "." }));
      }
      // a total per feature: the units of two features do not add up
      var features = Object.keys(shown).sort();
      var count = features.reduce(function (n, f) { return n + shown[f].length; }, 0);
      var summary = el("p", { "class": "console-events-total" }, [count + " event parts from " + from + " to " + to
        + (body.next ? " so far" : "") + ", counted: "]);
      features.forEach(function (f, i) {
        var total = window.MeterdChart.sumDecimals(shown[f]);
        summary.appendChild(document.createTextNode((i ? " · " : "") + f + " "));
        summary.appendChild(el("strong", { "data-feature": f, "data-exact": total, text: total }));
      });
      box.appendChild(summary);
      if (body.next) {
        var more = el("button", { type: "button", "class": "console-small", text: "More events" });
        more.addEventListener("click", function () { more.remove(); eventsPage(list, customerId, from, to, body.next, shown); });
        box.appendChild(more);
      }
    });
  }

  // ---------------------------------------------------------------- dead letters
  function deadLettersView(params) {
    var root = page("Dead letters", "dead-letters");
    var cursor = params.get("cursor") || "";
    var box = section("Events that were not counted, oldest first", "dead-letters-list");
    root.appendChild(box.node);
    load(box.body, api("GET", "/v1/dead-letters" + query({ cursor: cursor, limit: 50 }), undefined, true), function (body) {
      box.body.appendChild(el("p", { "class": "console-note", text: "Replay feeds a letter through ingest again: "
        + "an event already counted comes back duplicate, so replaying twice counts nothing twice." }));
      if (!body.data.length) {
        box.body.appendChild(el("p", { text: "No dead letter waits for a replay." }));
        return;
      }
      var outcome = el("p", { id: "replay-outcome", role: "status" });
      var rows = body.data.map(function (d) {
        var button = el("button", { type: "button", "class": "console-small", text: "Replay",
          "aria-label": "Replay dead letter " + d.id });
        button.addEventListener("click", function () {
          button.disabled = true;
          api("POST", "/v1/dead-letters/" + encodeURIComponent(d.id) + "/replay").then(function (r) {
            outcome.textContent = replayed(r.body);
            say(outcome.textContent);
          }).catch(function (err) { failure(outcome, err); button.disabled = false; });
        });
        return el("tr", { "data-dead-letter": d.id }, [
          cell(d.received_at), cell(d.reason), cell(d.detail),
          cell(el("span", { "class": "console-id", text: text(d.source) + " " + text(d.event_id) })),
          cell(jsonBlock(d.payload, "payload")), cell(button),
        ]);
      });
      box.body.appendChild(table(["Received", "Reason", "Detail", "Event", "Payload", ""], rows, "Dead letters"));
      var all = el("button", { type: "button", "class": "meterd-button", text: "Replay this page" });
      all.addEventListener("click", function () {
        all.disabled = true;
        api("POST", "/v1/dead-letters/replay", { ids: body.data.map(function (d) { return d.id; }) }).then(function (r) {
          outcome.textContent = replayed(r.body);
          say(outcome.textContent);
        }).catch(function (err) { failure(outcome, err); all.disabled = false; });
      });
      box.body.appendChild(el("div", { "class": "console-pager" }, [all,
        cursor ? el("a", { href: "#/dead-letters", text: "First page" }) : null,
        body.next ? el("a", { href: "#/dead-letters" + query({ cursor: body.next }), text: "Next page" }) : null]));
      box.body.appendChild(outcome);
    });
  }
  function replayed(r) {
    var outcomes = Object.keys(r.outcomes).map(function (k) { return k + " " + r.outcomes[k]; }).join(", ");
    return "Replayed " + r.replayed + ", still dead " + r.still_dead + (outcomes ? " (" + outcomes + ")" : "") + ".";
  }

  // ---------------------------------------------------------------- holds
  function holdsView(params) {
    var root = page("Holds", "holds");
    var box = section("Look up a hold", "hold-lookup");
    root.appendChild(box.node);
    box.body.appendChild(el("p", { "class": "console-note", text: "The API lists no holds: what each entitlement "
      + "holds is its held figure on the customer's page; a hold is looked up here by its id (the reserve "
      + "call's answer). Needs USAGE:RESERVE." }));
    var input = el("input", { id: "hold-id", name: "hold", type: "text", autocomplete: "off", size: "38",
      value: params.get("id") || "", pattern: "[0-9a-fA-F-]{36}" });
    var form = el("form", { "class": "meterd-form" }, [el("label", { "for": "hold-id" }, ["Hold id", input]),
      el("button", { type: "submit", "class": "meterd-button", text: "Look up" })]);
    var result = el("div", { id: "hold-result" });
    box.body.appendChild(form);
    box.body.appendChild(result);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (input.value.trim()) location.hash = "#/holds" + query({ id: input.value.trim() });
    });
    var id = params.get("id");
    if (!id) return;
    load(result, api("GET", "/v1/holds/" + encodeURIComponent(id)), function (h) {
      var facts = [["status", h.status], ["customer", h.customer_id], ["feature", h.feature], ["held", h.quantity],
        ["settled", h.settled_quantity], ["entitlement", h.entitlement_id], ["created", h.created_at],
        ["expires", h.expires_at], ["ended", h.ended_at]];
      result.appendChild(el("dl", { "class": "console-facts" }, facts.reduce(function (acc, f) {
        return acc.concat([el("dt", { text: f[0] }), el("dd", { "data-field": f[0], text: text(f[1]) })]);
      }, [])));
      result.appendChild(el("p", {}, [el("a", { href: "#/customer/" + encodeURIComponent(h.customer_id), text: "The customer's balances" })]));
    });
  }

  // ---------------------------------------------------------------- alert rules
  function alertRulesView() {
    var root = page("Alert rules", "alert-rules");
    var list = section("Your org's rules", "alert-rules-list");
    var create = section("New rule", "alert-rules-create");
    root.appendChild(list.node);
    root.appendChild(create.node);
    function refresh() {
      load(list.body, api("GET", "/v1/alert-rules"), function (rules) {
        if (!rules.length) {
          list.body.appendChild(el("p", { text: "No rule: the defaults apply (80 % and 100 % of a period's quantity)." }));
          return;
        }
        var outcome = el("p", { role: "status" });
        list.body.appendChild(table(["Kind", { label: "Threshold", num: true }, "Scope", "Created", ""], rules.map(function (r) {
          var scope = r.scope + (r.feature ? " " + r.feature : "") + (r.customer_id ? " " + r.customer_id : "")
            + (r.entitlement_id ? " " + r.entitlement_id : "");
          var del = el("button", { type: "button", "class": "console-small danger", text: "Delete", "aria-label": "Delete rule " + r.id });
          del.addEventListener("click", function () {
            if (!window.confirm("Delete the rule " + r.kind + " " + r.threshold + "?")) return;
            api("DELETE", "/v1/alert-rules/" + encodeURIComponent(r.id)).then(function () {
              say("Rule " + r.id + " deleted.");
              refresh();
            }).catch(function (err) { failure(outcome, err); });
          });
          return el("tr", { "data-rule": r.id }, [cell(r.kind), cell(r.threshold, { num: true }), cell(scope), cell(r.created_at), cell(del)]);
        }), "Alert rules"));
        list.body.appendChild(outcome);
      });
    }
    var f = {
      kind: el("select", { id: "rule-kind", name: "kind" }, ["PERCENT", "REMAINING", "CONSUMED"].map(function (k) {
        return el("option", { value: k, text: k });
      })),
      threshold: el("input", { id: "rule-threshold", name: "threshold", required: true, inputmode: "decimal",
        pattern: "[0-9]+(\\.[0-9]+)?", autocomplete: "off" }),
      feature: el("input", { id: "rule-feature", name: "feature", autocomplete: "off" }),
      customer: el("input", { id: "rule-customer", name: "customer_id", autocomplete: "off" }),
      entitlement: el("input", { id: "rule-entitlement", name: "entitlement_id", autocomplete: "off", size: "38" }),
    };
    var outcome = el("p", { role: "status" });
    var form = el("form", { "class": "meterd-form", id: "rule-form" }, [
      el("label", { "for": "rule-kind" }, ["Kind", f.kind]),
      el("label", { "for": "rule-threshold" }, ["Threshold (exact decimal)", f.threshold]),
      el("label", { "for": "rule-feature" }, ["Feature (optional)", f.feature]),
      el("label", { "for": "rule-customer" }, ["Customer (optional)", f.customer]),
      el("label", { "for": "rule-entitlement" }, ["Entitlement id (optional)", f.entitlement]),
      el("button", { type: "submit", "class": "meterd-button", text: "Create" }),
    ]);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var body = { kind: f.kind.value, threshold: f.threshold.value.trim() };
      if (f.feature.value.trim()) body.feature = f.feature.value.trim();
      if (f.customer.value.trim()) body.customer_id = f.customer.value.trim();
      if (f.entitlement.value.trim()) body.entitlement_id = f.entitlement.value.trim();
      api("POST", "/v1/alert-rules", body).then(function (r) {
        outcome.textContent = "Created " + r.body.id + ".";
        say(outcome.textContent);
        form.reset();
        refresh();
      }).catch(function (err) { failure(outcome, err); });
    });
    create.body.appendChild(el("p", { "class": "console-note", text: "PERCENT: consumed at or above this percent of "
      + "the period's quantity; REMAINING: remaining at or below; CONSUMED: consumed at or above. Needs ENTITLEMENTS:MANAGE." }));
    create.body.appendChild(form);
    create.body.appendChild(outcome);
    refresh();
  }

  // ---------------------------------------------------------------- webhook deliveries
  function deliveriesView(params) {
    var root = page("Webhook deliveries", "deliveries");
    var status = params.get("status") || "";
    var cursor = params.get("cursor") || "";
    var pick = el("select", { id: "delivery-status" }, ["", "pending", "delivered", "failed", "no_webhook"].map(function (s) {
      return el("option", { value: s, selected: s === status, text: s || "any" });
    }));
    var form = el("form", { "class": "meterd-form" }, [el("label", { "for": "delivery-status" }, ["Status", pick]),
      el("button", { type: "submit", "class": "meterd-button", text: "Filter" })]);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      location.hash = "#/deliveries" + query({ status: pick.value });
    });
    root.appendChild(form);
    var box = section("Notifications, newest first, with their deliveries", "deliveries-list");
    root.appendChild(box.node);
    load(box.body, api("GET", "/v1/notifications" + query({ status: status, cursor: cursor, limit: 50 }), undefined, true), function (body) {
      if (!body.data.length) {
        box.body.appendChild(el("p", { text: "No notification." }));
        return;
      }
      var outcome = el("p", { role: "status" });
      box.body.appendChild(table(["Created", "Type", "Entitlement", "Status", "Deliveries", ""], body.data.map(function (n) {
        var deliveries = el("ul", {}, n.deliveries.map(function (d) {
          return el("li", {}, [d.status + " · " + d.url + " · " + d.attempts + " attempt(s)"
            + (d.last_error ? " · " + d.last_error : "") + (d.next_attempt_at ? " · next " + d.next_attempt_at : "")]);
        }));
        var again = el("button", { type: "button", "class": "console-small", text: "Redeliver", "aria-label": "Redeliver " + n.id });
        again.addEventListener("click", function () {
          again.disabled = true;
          api("POST", "/v1/notifications/" + encodeURIComponent(n.id) + "/redeliver").then(function (r) {
            outcome.textContent = r.body.queued ? "Queued " + n.id + " again." : n.id + " was still pending: nothing changed.";
            say(outcome.textContent);
          }).catch(function (err) { failure(outcome, err); again.disabled = false; });
        });
        return el("tr", { "data-notification": n.id }, [cell(n.created_at), cell(n.type),
          cell(el("span", { "class": "console-id", title: String(n.entitlement_id), text: shortId(n.entitlement_id) })),
          cell(stateBadge(n.status)), cell(n.deliveries.length ? deliveries : "—"),
          cell(el("div", {}, [again, jsonBlock(n.payload, "payload")]))]);
      }), "Notifications"));
      box.body.appendChild(outcome);
      box.body.appendChild(el("div", { "class": "console-pager" }, [
        cursor ? el("a", { href: "#/deliveries" + query({ status: status }), text: "First page" }) : null,
        body.next ? el("a", { href: "#/deliveries" + query({ status: status, cursor: body.next }), text: "Next page" }) : null]));
    });
  }

  // ---------------------------------------------------------------- queue health
  function healthView() {
    var root = page("Queue health", "health");
    var box = section("meterd status", "health-status");
    root.appendChild(box.node);
    var again = el("button", { type: "button", "class": "meterd-button", text: "Refresh" });
    again.addEventListener("click", draw);
    root.appendChild(again);
    function draw() {
      load(box.body, api("GET", "/v1/status?sample=1"), function (st) {
        var dead = Object.keys(st.dead_letters).reduce(function (n, k) { return n + st.dead_letters[k]; }, 0);
        var lag = st.flush_lag_seconds === null ? "all flushed" : st.flush_lag_seconds.toFixed(1) + " s";
        var rate = st.events_per_second === null ? "—" : Math.round(st.events_per_second) + " events/s";
        var cards = [["Flush lag", lag, "flush-lag"], ["Throughput (accepted)", rate, "throughput"],
          ["Dead letters", String(dead), "dead-letters"],
          ["Waiting for the log", text(st.storage.waiting_events), "waiting"],
          ["Workers alive", st.workers === null ? "unknown" : String(st.workers.length), "workers"],
          ["Redis safety", st.redis_safety.state, "redis-safety"]];
        box.body.appendChild(el("div", { "class": "meterd-cards" }, cards.map(function (c) {
          return el("div", { "class": "meterd-card", "data-figure": c[2] }, [el("h4", { text: c[0] }),
            el("div", { "class": "meterd-figure", text: c[1] })]);
        })));
        box.body.appendChild(table(["Queue", { label: "Ready", num: true }, { label: "Unacked", num: true }], st.queues.map(function (q) {
          return el("tr", {}, [cell(q.queue), cell(q.ready, { num: true }), cell(q.unacked, { num: true })]);
        }), "Queues"));
        var byReason = Object.keys(st.dead_letters).sort().map(function (k) {
          return el("tr", {}, [cell(k), cell(st.dead_letters[k], { num: true })]);
        });
        if (byReason.length) box.body.appendChild(table(["Dead letters by reason", { label: "Count", num: true }], byReason, "Dead letters by reason"));
        if (st.errors.length) {
          box.body.appendChild(el("ul", { "class": "console-note" }, st.errors.map(function (e) { return el("li", { text: e }); })));
        }
      });
    }
    draw();
  }

  // ---------------------------------------------------------------- routing
  function route() {
    if (!apiKey()) { renderSignIn(); return; }
    var hash = location.hash.replace(/^#/, "") || "/customers";
    var qmark = hash.indexOf("?");
    var path = qmark < 0 ? hash : hash.slice(0, qmark);
    var params = new URLSearchParams(qmark < 0 ? "" : hash.slice(qmark + 1));
    var parts = path.split("/").filter(Boolean);
    var view = parts[0] || "customers";
    if (view === "customer" && parts.length > 1) customerView(decodeURIComponent(parts.slice(1).join("/")), params);
    else if (view === "dead-letters") deadLettersView(params);
    else if (view === "holds") holdsView(params);
    else if (view === "alert-rules") alertRulesView();
    else if (view === "deliveries") deliveriesView(params);
    else if (view === "health") healthView();
    else customersView(params);
    main.focus({ preventScroll: true });
  }

  document.getElementById("console-sign-out").addEventListener("click", function () {
    signOut("Signed out.");
    history.replaceState(null, "", location.pathname + location.search);
  });
  window.addEventListener("hashchange", route);
  route();
})();
