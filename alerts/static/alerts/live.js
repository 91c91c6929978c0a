/*
 * Live alert board. Plain JavaScript, no build step.
 *
 * On every (re)connect: open the WebSocket, wait for "hello" (the server has joined the
 * tenant's group), then read the whole board from snapshot.json, so nothing that changed
 * while disconnected is missed. Pushed "instance" / "removed" messages that arrive while
 * the snapshot loads are kept and applied after it. Every reading carries `as_of`; a row
 * only ever moves to a newer reading. Lost connections are retried with exponential
 * backoff and jitter; close codes that retrying cannot fix (see alerts/live/consumers.py)
 * stop the retries and say why.
 */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("live-config").textContent);
  const boardEl = document.querySelector("[data-live-board]");
  const statusEl = document.querySelector("[data-live-status]");
  const summaryEl = document.querySelector("[data-live-summary]");
  const noticeEl = document.querySelector("[data-live-notice]");

  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  const PING_MS = 25000;
  const FINAL_CLOSE = {
    4400: "Choose a tenant to watch.",
    4401: "Your session has ended: log in again.",
    4403: "You may not watch this tenant's alerts.",
    4404: "Unknown tenant.",
  };
  const STATE_RANK = { firing: 0, flapping: 1, pending: 2 };

  /** Instance id -> {instance, asOf}; instance is null once it left the board. */
  const rows = new Map();
  let socket = null;
  let attempt = 0;
  let synced = false;
  let buffered = [];
  let pingTimer = null;
  let reconnectTimer = null;
  let updatedAt = null;

  // --- connection ---------------------------------------------------------------

  function setStatus(state, text) {
    statusEl.dataset.liveStatus = state;
    statusEl.textContent = text;
  }

  function showNotice(text, link) {
    noticeEl.textContent = text || "";
    if (link) {
      noticeEl.append(" ");
      const a = document.createElement("a");
      a.href = link.href;
      a.textContent = link.text;
      noticeEl.append(a);
    }
    noticeEl.hidden = !text;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    setStatus(attempt ? "reconnecting" : "connecting", attempt ? "Reconnecting…" : "Connecting…");
    synced = false;
    buffered = [];
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + config.socketPath);
    socket = ws;
    ws.onmessage = function (event) {
      if (ws === socket) handleMessage(JSON.parse(event.data));
    };
    ws.onclose = function (event) {
      if (ws === socket) closed(event);
    };
  }

  function closed(event) {
    clearInterval(pingTimer);
    synced = false;
    socket = null;
    const final = FINAL_CLOSE[event.code];
    if (final) {
      clearTimeout(reconnectTimer);
      reconnectTimer = null;
      setStatus("denied", final);
      if (event.code === 4401) showNotice(final, { href: config.loginUrl, text: "Log in" });
      else showNotice(final);
      return;
    }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, attempt));
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    attempt += 1;
    setStatus("reconnecting", "Disconnected, retrying in " + Math.max(1, Math.round(delay / 1000)) + " s");
    reconnectTimer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    // Only while waiting to retry: not after a refusal that retrying cannot fix.
    if (socket === null && reconnectTimer !== null) {
      attempt = 0;
      connect();
    }
  }

  function handleMessage(message) {
    switch (message.type) {
      case "hello":
        loadSnapshot();
        break;
      case "instance":
      case "removed":
        if (!synced) {
          buffered.push(message);
        } else if (apply(message)) {
          updatedAt = new Date();
          render();
        }
        break;
      case "error":
        showNotice(message.error);
        break;
      default:
        break; // pong, subscribed
    }
  }

  async function loadSnapshot() {
    const ws = socket;
    try {
      const response = await fetch(config.snapshotUrl, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json" },
      });
      if (ws !== socket) return;
      if (response.status === 401) {
        ws.onclose = null;
        ws.close();
        closed({ code: 4401 });
        return;
      }
      if (!response.ok) throw new Error("the snapshot answered " + response.status);
      const data = await response.json();
      if (ws !== socket) return;
      rows.clear();
      data.instances.forEach(function (instance) {
        rows.set(instance.id, { instance: instance, asOf: data.as_of });
      });
      buffered.forEach(apply);
      buffered = [];
      synced = true;
      attempt = 0;
      updatedAt = new Date();
      setStatus("live", "Live");
      showNotice("");
      render();
      clearInterval(pingTimer);
      pingTimer = setInterval(function () {
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ping" }));
      }, PING_MS);
    } catch (error) {
      if (ws === socket) {
        showNotice("Could not load the board: " + error.message);
        ws.close(); // onclose schedules the retry
      }
    }
  }

  /** Apply one pushed reading; false when it is older than what the row has. */
  function apply(message) {
    const id = message.type === "removed" ? message.id : message.instance.id;
    const current = rows.get(id);
    if (current && current.asOf > message.as_of) return false;
    const instance = message.type === "removed" || !message.instance.on_board ? null : message.instance;
    rows.set(id, { instance: instance, asOf: message.as_of });
    return true;
  }

  // --- rendering ----------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function relative(iso) {
    if (!iso) return "";
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (seconds < 60) return seconds + " s ago";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min ago";
    return Math.floor(seconds / 86400) + " d ago";
  }

  function formatValue(value) {
    if (value === null || value === undefined) return "—";
    return Number(value).toLocaleString(undefined, { maximumFractionDigits: 3 });
  }

  function compare(a, b) {
    if (a.acknowledged !== b.acknowledged) return a.acknowledged ? 1 : -1;
    const rank = (STATE_RANK[a.state] ?? 3) - (STATE_RANK[b.state] ?? 3);
    if (rank) return rank;
    return (a.started_at || "").localeCompare(b.started_at || "") || a.id - b.id;
  }

  function timeCell(iso) {
    const td = el("td", "started");
    if (!iso) return td;
    const time = el("time", null, relative(iso));
    time.dateTime = iso;
    time.dataset.relative = "";
    time.title = new Date(iso).toLocaleString();
    td.append(time, el("span", "detail flag", new Date(iso).toLocaleString()));
    return td;
  }

  function row(instance) {
    const tr = el("tr");
    tr.dataset.instanceId = String(instance.id);
    tr.dataset.state = instance.state;
    tr.dataset.acknowledged = String(instance.acknowledged);
    tr.dataset.silenced = String(instance.silenced);

    const state = el("td");
    state.append(el("span", "state " + instance.state, instance.state));
    tr.append(state);

    const alert = el("td");
    alert.append(el("div", "rule", instance.rule));
    if (instance.summary) alert.append(el("div", "detail", instance.summary));
    tr.append(alert);

    tr.append(el("td", "value", formatValue(instance.value)));

    const labels = el("td");
    const chips = el("div", "labels");
    Object.keys(instance.labels || {}).sort().forEach(function (name) {
      chips.append(el("span", "label", name + "=" + instance.labels[name]));
    });
    labels.append(chips);
    tr.append(labels);

    tr.append(timeCell(instance.started_at));

    const status = el("td", "flags");
    if (instance.acknowledged) {
      const who = instance.acknowledged_by ? " by " + instance.acknowledged_by : "";
      const ack = el("span", "flag ack", "Acknowledged" + who);
      ack.dataset.flag = "acknowledged";
      if (instance.ack_comment) ack.title = instance.ack_comment;
      status.append(ack);
    }
    if (instance.silenced) {
      const until = instance.silenced_until ? " until " + new Date(instance.silenced_until).toLocaleTimeString() : "";
      const silenced = el("span", "flag silenced", "Silenced" + until);
      silenced.dataset.flag = "silenced";
      status.append(silenced);
    }
    if (!instance.acknowledged && !instance.silenced) status.append(el("span", "detail", "—"));
    tr.append(status);

    const runbook = el("td");
    if (/^https?:\/\//i.test(instance.runbook_url || "")) {
      const link = el("a", null, "Runbook");
      link.href = instance.runbook_url;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      runbook.append(link);
    }
    tr.append(runbook);

    const actions = el("td", "actions");
    const ack = el("button", null, instance.acknowledged ? "Acknowledged" : "Acknowledge");
    ack.type = "button";
    ack.dataset.action = "acknowledge";
    ack.disabled = !config.canWrite || instance.acknowledged;
    const silence = el("button", null, instance.silenced ? "Silenced" : "Silence 1 h");
    silence.type = "button";
    silence.dataset.action = "silence";
    silence.disabled = !config.canWrite || instance.silenced;
    if (!config.canWrite) {
      ack.title = silence.title = "Your role in this tenant is read-only.";
    }
    actions.append(ack, silence);
    tr.append(actions);
    return tr;
  }

  function render() {
    const visible = [];
    rows.forEach(function (entry) {
      if (entry.instance) visible.push(entry.instance);
    });
    const severities = config.severities.slice();
    visible.forEach(function (instance) {
      if (severities.indexOf(instance.severity) < 0) severities.push(instance.severity);
    });
    const fragment = document.createDocumentFragment();
    severities.forEach(function (severity) {
      const items = visible.filter(function (i) { return i.severity === severity; }).sort(compare);
      const section = el("section", "severity");
      section.dataset.severity = severity;
      const title = el("h2", null, severity.charAt(0).toUpperCase() + severity.slice(1));
      title.append(el("span", "count", String(items.length)));
      section.append(title);
      if (items.length === 0) {
        section.append(el("div", "empty", "Nothing " + severity + " right now."));
      } else {
        const table = el("table");
        const head = el("tr");
        ["State", "Alert", "Value", "Labels", "Started", "Status", "Runbook", ""].forEach(function (name) {
          head.append(el("th", null, name));
        });
        const thead = el("thead");
        thead.append(head);
        table.append(thead);
        const body = el("tbody");
        items.forEach(function (instance) { body.append(row(instance)); });
        table.append(body);
        section.append(table);
      }
      fragment.append(section);
    });
    boardEl.replaceChildren(fragment);

    const count = function (test) { return visible.filter(test).length; };
    summaryEl.textContent =
      visible.length + " active: " +
      count(function (i) { return i.state === "firing"; }) + " firing, " +
      count(function (i) { return i.state === "pending"; }) + " pending, " +
      count(function (i) { return i.state === "flapping"; }) + " flapping · " +
      count(function (i) { return i.acknowledged; }) + " acknowledged · " +
      count(function (i) { return i.silenced; }) + " silenced" +
      (updatedAt ? " · updated " + updatedAt.toLocaleTimeString() : "");
  }

  setInterval(function () {
    document.querySelectorAll("time[data-relative]").forEach(function (time) {
      time.textContent = relative(time.dateTime);
    });
  }, 30000);

  // --- actions (REST API, session + CSRF) -----------------------------------------

  async function apiPost(path, body) {
    const response = await fetch(config.apiBase + path, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRFToken": config.csrfToken,
        "X-Tenant": config.tenant.slug,
      },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      let detail = "";
      try {
        detail = JSON.stringify(await response.json());
      } catch (error) {
        detail = response.statusText;
      }
      throw new Error(response.status + " " + detail);
    }
    return response;
  }

  function silenceBody(instance) {
    const now = new Date();
    const ends = new Date(now.getTime() + config.silenceMinutes * 60000);
    // The labels the dispatcher matches silences against: the instance's own, with the
    // rule name as alertname (which overrides a label of that name).
    const matchers = [{ name: "alertname", op: "=", value: instance.rule }];
    Object.keys(instance.labels || {}).sort().forEach(function (name) {
      if (name !== "alertname" && name !== "severity") {
        matchers.push({ name: name, op: "=", value: String(instance.labels[name]) });
      }
    });
    return {
      matchers: matchers,
      starts_at: now.toISOString(),
      ends_at: ends.toISOString(),
      comment: "Silenced for " + config.silenceMinutes + " min from the live board",
    };
  }

  boardEl.addEventListener("click", async function (event) {
    const button = event.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    const id = Number(button.closest("tr").dataset.instanceId);
    const entry = rows.get(id);
    if (!entry || !entry.instance) return;
    button.disabled = true;
    button.textContent = "…";
    try {
      if (button.dataset.action === "acknowledge") {
        await apiPost("instances/" + id + "/acknowledge/", { comment: "Acknowledged from the live board" });
      } else {
        await apiPost("silences/", silenceBody(entry.instance));
      }
      showNotice(""); // the pushed update redraws the row
    } catch (error) {
      showNotice("Could not " + button.dataset.action + " alert " + id + ": " + error.message);
      render();
    }
  });

  window.addEventListener("online", reconnectNow);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") reconnectNow();
  });

  connect();
})();
