// Client-side routing of events to subscriptions, and position ordering.
//
// The server sends each event once per connection, however many of the
// connection's patterns match it, so the client decides which of its
// subscriptions get it: the same rules as the server (PROTOCOL section 2).

import type { RealtimeEvent } from "./types.js";

/** A compiled topic pattern: event -> does it belong to the subscription. */
export type Matcher = (e: RealtimeEvent) => boolean;

type Row = Record<string, unknown> | undefined;

/**
 * Compiles a topic pattern ("*", "posts", "posts.*", "posts.123",
 * "posts.*?user_id=eq.ann&n=gt.2"). Bad syntax never throws: the server
 * answers such a topic with invalid_topic before any event is routed.
 */
export function compile(topic: string): Matcher {
  const q = topic.indexOf("?");
  const base = q < 0 ? topic : topic.slice(0, q);
  const filters = q < 0 ? [] : topic.slice(q + 1).split("&").map(filter);
  if (base == "*") return () => true;
  const dot = base.indexOf(".");
  const coll = dot < 0 ? base : base.slice(0, dot);
  const id = dot < 0 || base.slice(dot + 1) == "*" ? "" : base.slice(dot + 1);
  return (e) => {
    if (e.collection != coll) return false;
    if (id && e.record_id != id && !oldKey(e, id)) return false;
    if (!filters.length || e.action == "truncate") return true;
    const row: Row =
      e.type == "custom_event" ? (e.data as Row) : e.action == "delete" ? e.old_record : e.record;
    return filters.every((f) => f(row));
  };
}

// An update that changed the key reaches the subscribers of the old id too;
// old_record then holds the old key (its values joined with "," in column
// order, as a composite record id is).
function oldKey(e: RealtimeEvent, id: string): boolean {
  return e.type == "record_event" && !!e.old_record && String(Object.values(e.old_record)) == id;
}

// One PostgREST filter, "col=op.value".
function filter(s: string): (row: Row) => boolean {
  const eq = s.indexOf("=");
  const col = s.slice(0, eq);
  const rest = s.slice(eq + 1);
  const dot = rest.indexOf(".");
  const op = rest.slice(0, dot);
  const arg = rest.slice(dot + 1);
  const list = op == "in" ? values(arg.slice(1, -1)) : [];
  return (row) => {
    if (!row || typeof row != "object" || !(col in row)) return false;
    const v = row[col];
    if (op == "is") return v === (arg == "null" ? null : arg == "true");
    if (v === null || typeof v == "object") return false;
    if (op == "in") return list.some((x) => cmp(v, x) == 0);
    const c = cmp(v, arg);
    return op == "eq" ? c == 0 : op == "neq" ? c != 0 : op == "lt" ? c < 0 : op == "lte" ? c <= 0 : op == "gt" ? c > 0 : op == "gte" && c >= 0;
  };
}

// A value compares as a number when the column's value is a number.
function cmp(v: unknown, x: string): number {
  if (typeof v == "number") return v - Number(x);
  const s = String(v);
  return s < x ? -1 : s > x ? 1 : 0;
}

// 'a,"b,c",d' -> ["a", "b,c", "d"]
function values(s: string): string[] {
  const out: string[] = [];
  let cur = "";
  let quoted = false;
  for (const ch of s) {
    if (ch == '"') quoted = !quoted;
    else if (ch == "," && !quoted) out.push(cur), (cur = "");
    else cur += ch;
  }
  out.push(cur);
  return out;
}

/**
 * The sort key of a position ("0/16B3748:2"): two keys compare as strings in
 * the order of their positions. Positions are opaque to applications; the
 * client only orders them to drop what it has already delivered. A string
 * that is not a position gets "", which sorts first.
 */
export function key(p: string | undefined): string {
  const m = p && /^([0-9A-F]{1,8})\/([0-9A-F]{1,8}):(\d{1,10})$/i.exec(p);
  return m ? pad(m[1].toUpperCase(), 8) + pad(m[2].toUpperCase(), 8) + pad(m[3], 10) : "";
}

const pad = (s: string, n: number) => s.padStart(n, "0");
