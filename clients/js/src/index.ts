// @pgrealtime/client: pgrealtime's guarantees (every event once, in order,
// across reconnects and server restarts) without hand-written reconnect code.
// The protocol is docs/PROTOCOL.md; the API is documented in README.md.

import { compile, key, type Matcher } from "./match.js";
import type {
  AuthResult, Client, ClientOptions, RealtimeError, RealtimeEvent, State, StateChange,
  SubscribeOptions, Subscription, WebSocketLike,
} from "./types.js";

export type * from "./types.js";

interface Sub {
  t: string; // topic
  o: SubscribeOptions;
  m: Matcher;
  p?: string; // position: every matching event up to here was delivered
  k: string; // key(p)
  // Floor: a positioned event after it proves that this subscription has
  // seen everything before that event (undefined: nothing proves it).
  f?: string;
  live: boolean; // subscribed on the current connection
  was: boolean; // was live on some connection
  dead: boolean;
}

interface Req {
  t: string; // message type
  msg: any;
  subs?: Sub[];
  since?: string;
  res?: (v: any) => void;
  rej?: (e: RealtimeError) => void;
}

// Close codes after which reconnecting cannot help (protocol abuse, bad data).
const FATAL = [1002, 1003, 1007, 1008, 1009, 1010];

/**
 * Creates a client and starts connecting. `url` is the WebSocket endpoint
 * (`ws://host:8080/realtime`; http(s) URLs and, in a page, relative ones
 * such as `/realtime` work too).
 */
export function createClient(url: string, opts: ClientOptions = {}): Client {
  const WS = opts.WebSocket || (globalThis as any).WebSocket;
  if (!WS) throw new Error("no WebSocket: pass one, e.g. createClient(url, { WebSocket }) with WebSocket from the ws package");
  const base = new URL(url, (globalThis as any).location?.href);
  base.protocol = base.protocol.replace("http", "ws");
  const minDelay = opts.minDelay ?? 500;
  const maxDelay = opts.maxDelay ?? 30000;
  const pingMs = opts.pingInterval ?? 25000;
  const store = opts.storage;
  const prefix = opts.storageKey ?? "pgrealtime:";
  const subs = new Set<Sub>();
  const reqs = new Map<string, Req>();
  const listeners = new Set<(c: StateChange) => void>();
  const g = globalThis as any;
  let token = opts.token;
  let ws: WebSocketLike | undefined;
  let state: State = "connecting";
  let stopped = false;
  let attempt = 0;
  let n = 0; // request ids
  let opened = 0; // when the current socket opened
  let lastRx = 0;
  let skew = 0; // server clock minus ours
  let maxBytes = 65536;
  let queued: Sub[] = [];
  let retryT: any, pingT: any, authT: any, saveT: any;

  const emit = (c: StateChange) => {
    state = c.state;
    listeners.forEach((f) => f(c));
  };
  const report = (e: RealtimeError, s?: Sub) => (s?.o.onError || opts.onError)?.(e);
  const later = (f: () => void, ms: number) => {
    const w = ws;
    setTimeout(() => ws == w && f(), ms);
  };

  // Expiry of a JWT in ms on our clock (Infinity: none or not a JWT).
  const expiry = (t?: string) => {
    try {
      return JSON.parse(atob(t!.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).exp * 1000 - skew || 1 / 0;
    } catch {
      return 1 / 0;
    }
  };

  const setPos = (s: Sub, p?: string) => {
    s.p = p;
    s.k = key(p);
    if (p) store?.setItem(prefix + s.t, p);
  };
  const saveAll = () => {
    clearTimeout(saveT);
    saveT = 0;
    for (const s of subs) if (s.p) store?.setItem(prefix + s.t, s.p);
  };
  const drop = (s: Sub) => {
    s.dead = true;
    s.live = false;
    subs.delete(s);
  };

  async function open() {
    retryT = 0;
    if (opts.getToken && (!token || expiry(token) < Date.now() + 5000)) {
      try {
        token = await opts.getToken();
      } catch (e: any) {
        report({ code: "token", message: "getToken: " + (e?.message || e) });
        return stopped || retry();
      }
    }
    if (stopped) return;
    const u = new URL(base);
    if (token) u.searchParams.set("access_token", token);
    let w: WebSocketLike;
    try {
      w = ws = new WS(u.href);
    } catch (e: any) {
      // A URL this WebSocket refuses (e.g. ws: from an https: page).
      stopped = true;
      report({ code: "closed", message: "cannot open a WebSocket: " + (e?.message || e) });
      return emit({ state: "closed" });
    }
    let why = "";
    w.onopen = () => (opened = lastRx = Date.now());
    w.onerror = (e) => (why = String(e?.message || ""));
    w.onmessage = (e) => ws == w && frame(e.data);
    w.onclose = (e) => ws == w && closed(e.code, e.reason, why);
  }

  function retry(code?: number, reason?: string) {
    const d = Math.min(maxDelay, minDelay * 2 ** attempt++);
    const delay = Math.round(d / 2 + (Math.random() * d) / 2);
    emit({ state: "reconnecting", code, reason, delay });
    retryT = setTimeout(open, delay);
  }

  function closed(code: number, reason: string, why: string) {
    const wasOpen = opened;
    ws = undefined;
    opened = 0;
    clearInterval(pingT);
    clearTimeout(authT);
    for (const r of reqs.values()) r.rej?.({ code: "closed", message: "the connection closed" });
    reqs.clear();
    for (const s of subs) s.live = false;
    saveAll();
    if (stopped) return emit({ state: "closed", code, reason });
    if (wasOpen && Date.now() - wasOpen > 5000) attempt = 0;
    let err: RealtimeError | undefined;
    if (FATAL.includes(code)) {
      err = { code: "closed", message: reason || "closed by the server", closeCode: code };
    } else if (code == 4001 || /\b401\b/.test(why) || (!wasOpen && expiry(token) < Date.now())) {
      // Expired or refused token: a fresh one from getToken, else give up.
      const expired = code == 4001 || expiry(token) < Date.now();
      const e = {
        code: expired ? "token_expired" : "unauthorized",
        message: expired ? "the token expired" : "the server refused the token",
        closeCode: code,
      };
      if (!opts.getToken) err = e;
      else {
        token = undefined;
        if (code != 4001) report(e);
      }
    }
    if (!err) return retry(code, reason);
    stopped = true;
    report(err);
    for (const s of subs) s.o.onError?.(err);
    emit({ state: "closed", code, reason });
  }

  function send(msg: any, r?: Omit<Req, "msg">) {
    if (ws?.readyState != 1) return r?.rej?.({ code: "closed", message: "not connected" });
    if (r) reqs.set((msg.id = String(++n)), { ...r, msg });
    ws.send(JSON.stringify(msg));
  }

  // One subscribe for every subscription with a position (since = the
  // oldest; each drops what it has already seen), one for the others. A
  // single request lets the server replay the union in order, without
  // duplicates among overlapping topics.
  function resubscribe(list: Sub[]) {
    let since: string | undefined;
    for (const s of list) if (s.p && (!since || s.k < key(since))) since = s.p;
    request(list.filter((s) => s.p), since);
    request(list.filter((s) => !s.p));
  }

  function request(list: Sub[], since?: string) {
    const topics = [...new Set(list.filter((s) => !s.dead).map((s) => s.t))];
    while (topics.length) {
      // As many topics as fit in the server's largest frame.
      let i = 0;
      for (let size = 200; i < topics.length && (size += topics[i].length + 3) < maxBytes; ) i++;
      const part = topics.splice(0, i || 1);
      send({ type: "subscribe", topics: part, since }, { t: "s", since, subs: list.filter((s) => part.includes(s.t)) });
    }
  }

  function frame(data: any) {
    lastRx = Date.now();
    let m: any;
    try {
      m = JSON.parse(data);
    } catch {
      return report({ code: "bad_frame", message: "the server sent a frame that is not JSON" });
    }
    const r = reqs.get(m.id);
    reqs.delete(m.id);
    const t = m.type;
    if (t == "record_event" || t == "custom_event") event(m);
    else if (t == "connected") connected(m);
    else if (t == "subscribed" && r) subscribed(r, m.position);
    else if (t == "pong") r?.res?.(0);
    else if (t == "authenticated") authenticated(r, m);
    else if (t == "error") error(r, m);
  }

  function connected(m: any) {
    skew = Date.parse(m.server_time) - Date.now() || 0;
    maxBytes = m.limits?.max_message_bytes || maxBytes;
    emit({ state: "connected", connectionId: m.connection_id, limits: m.limits });
    pingT = setInterval(() => {
      if (Date.now() - lastRx > 2 * pingMs) {
        // The network is gone without a close: give up on this socket.
        const w = ws;
        closed(1006, "no answer to ping", "");
        w?.close();
      } else send({ type: "ping" });
    }, pingMs);
    plan();
    queued = [];
    for (const s of subs) {
      // Live before without ever learning a position: cannot resume.
      if (s.was && !s.p) s.o.onGap?.({});
    }
    resubscribe([...subs]);
  }

  function subscribed(r: Req, position?: string) {
    for (const s of r.subs!) {
      if (s.dead) continue;
      if (!r.since) setPos(s, position);
      // Replayed events are at or before position; anything after it is
      // live, and everything before it was delivered first.
      s.f = position ? key(position) : r.since ? undefined : "";
      s.live = s.was = true;
      s.o.onLive?.(s.p);
    }
    // The replay is queued before the reply to a later request: after the
    // pong, these subscriptions have seen everything up to position (so a
    // quiet one does not resume from a position the history has dropped).
    if (r.since && position) {
      send({ type: "ping" }, {
        t: "ping",
        res: () => r.subs!.forEach((s) => !s.dead && key(position) > s.k && setPos(s, position)),
      });
    }
  }

  function event(e: RealtimeEvent) {
    const p = e.position;
    const k = key(p);
    for (const s of subs) {
      if (!s.live || (p && k && k <= s.k)) continue; // not subscribed yet, or seen
      if (s.m(e)) {
        if (p) setPos(s, p);
        try {
          s.o.onEvent(e);
        } catch (x) {
          setTimeout(() => {
            throw x;
          });
        }
      } else if (k && s.f != null && k > s.f) {
        s.p = p;
        s.k = k;
        if (store && !saveT) saveT = setTimeout(saveAll, 1000);
      }
    }
  }

  function error(r: Req | undefined, m: any) {
    const err: RealtimeError = { code: m.code, message: m.message, topic: m.topic };
    if (m.code == "rate_limited" && r) {
      return later(() => {
        if (r.subs) request(r.subs, r.since);
        else if (![...subs].some((s) => r.msg.topics?.includes(s.t))) send(r.msg, r);
      }, 1100);
    }
    if (!r?.subs) return r?.rej ? r.rej(err) : report(err);
    const list = r.subs.filter((s) => !s.dead);
    if (m.code == "history_unavailable" && !r.since) {
      // Refused without since: the server's stream has not started yet
      // (Postgres unreachable since it started). No gap: try again.
      report(err);
      return later(() => request(list), 2000);
    }
    if (m.code == "history_unavailable") {
      for (const s of list) {
        setPos(s);
        store?.removeItem(prefix + s.t);
        s.o.onGap?.({ since: r.since });
      }
      return request(list);
    }
    // All or nothing: the named topic failed (too_many_subscriptions: and
    // those after it); the others are asked for again.
    const topics: string[] = r.msg.topics;
    const i = topics.indexOf(m.topic);
    const bad = i < 0 ? topics : m.code == "too_many_subscriptions" ? topics.slice(i) : [m.topic];
    for (const s of list) if (bad.includes(s.t)) drop(s), report(err, s);
    request(list.filter((s) => !s.dead), r.since);
  }

  function authenticated(r: Req | undefined, m: any) {
    for (const t of m.revoked || []) {
      for (const s of subs) {
        if (s.t == t) drop(s), report({ code: "revoked", message: "the new token may not read " + t, topic: t }, s);
      }
    }
    plan();
    r?.res?.(m);
  }

  // Refresh the token before it expires, on the open connection.
  function plan() {
    clearTimeout(authT);
    const left = expiry(token) - Date.now();
    if (!opts.getToken || left == 1 / 0) return;
    authT = setTimeout(async () => {
      try {
        token = await opts.getToken!();
        send({ type: "auth", token }, { t: "auth" });
      } catch (e: any) {
        report({ code: "token", message: "getToken: " + (e?.message || e) });
      }
    }, Math.min(2e9, Math.max(1000, left - Math.min(30000, left / 4))));
  }

  const online = () => retryT && (clearTimeout(retryT), open());
  g.addEventListener?.("online", online);
  open();

  return {
    get state() {
      return state;
    },
    subscribe(topic, o): Subscription {
      const s: Sub = { t: topic, o, m: compile(topic), k: "", live: false, was: false, dead: false };
      const since = o.since ?? store?.getItem(prefix + topic);
      if (since) (s.p = since), (s.k = key(since));
      subs.add(s);
      if (state == "connected" && queued.push(s) == 1) {
        queueMicrotask(() => {
          resubscribe(queued);
          queued = [];
        });
      }
      return {
        topic,
        get position() {
          return s.p;
        },
        unsubscribe() {
          if (s.dead) return;
          drop(s);
          if (![...subs].some((x) => x.t == topic)) {
            store?.removeItem(prefix + topic);
            send({ type: "unsubscribe", topics: [topic] }, { t: "u" });
          }
        },
      };
    },
    onState(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    auth(t): Promise<AuthResult> {
      token = t;
      return new Promise((res, rej) => send({ type: "auth", token: t }, { t: "auth", res, rej }));
    },
    close() {
      stopped = true;
      clearTimeout(retryT);
      g.removeEventListener?.("online", online);
      const w = ws;
      if (w) closed(1000, "closed by the client", ""), w.close(1000);
      else emit({ state: "closed" });
    },
  };
}
