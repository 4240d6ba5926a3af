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
  const fs = q < 0 ? [] : filters(topic.slice(q + 1));
  if (base == "*") return () => true;
  const dot = base.indexOf(".");
  const coll = dot < 0 ? base : base.slice(0, dot);
  const id = dot < 0 || base.slice(dot + 1) == "*" ? "" : base.slice(dot + 1);
  return (e) => {
    if (e.collection != coll) return false;
    if (id && e.record_id != id && !oldKey(e, id)) return false;
    if (!fs.length || e.action == "truncate") return true;
    const row: Row =
      e.type == "custom_event" ? (e.data as Row) : e.action == "delete" ? e.old_record : e.record;
    return fs.every((f) => f(row));
  };
}

// An update that changed the key reaches the subscribers of the old id too;
// old_record then holds the old key (its values joined with "," in column
// order, as a composite record id is).
function oldKey(e: RealtimeEvent, id: string): boolean {
  return e.type == "record_event" && !!e.old_record && String(Object.values(e.old_record)) == id;
}

// The filters after "?", parsed as the server parses them
// (broker/filter.go): a value ends at "&", except inside an in-list's double
// quotes, where \" and \\ escape. Bad syntax never throws (the server
// refuses such a topic before any event is routed).
function filters(s: string): ((row: Row) => boolean)[] {
  const out: ((row: Row) => boolean)[] = [];
  while (s) {
    const eq = s.indexOf("=");
    const dot = s.indexOf(".", eq);
    if (eq < 0 || dot < 0) break;
    const col = s.slice(0, eq);
    const op = s.slice(eq + 1, dot);
    s = s.slice(dot + 1);
    let vals: string[] = [];
    if (op == "in") {
      let i = 1;
      for (;;) {
        let cur = "";
        if (s[i] == '"') {
          for (i++; i < s.length && s[i] != '"'; i++) cur += s[s[i] == "\\" ? ++i : i];
          i++;
        } else while (i < s.length && s[i] != "," && s[i] != ")") cur += s[i++];
        vals.push(cur);
        if (s[i++] != ",") break;
      }
      s = s.slice(i);
    } else {
      const amp = s.indexOf("&");
      vals = [amp < 0 ? s : s.slice(0, amp)];
      s = amp < 0 ? "" : s.slice(amp);
    }
    out.push(filter(col, op, vals));
    s = s.slice(1); // the "&"
  }
  return out;
}

// One PostgREST filter, "col=op.value" (values: the value, or the in-list).
function filter(col: string, op: string, vals: string[]): (row: Row) => boolean {
  const arg = vals[0];
  return (row) => {
    if (!row || typeof row != "object" || !(col in row)) return false;
    const v = row[col];
    if (op == "is") return v === (arg == "null" ? null : arg == "true");
    if (v === null || Array.isArray(v)) return false;
    if (op == "in") return vals.some((x) => cmp(v, x) == 0);
    const c = cmp(v, arg);
    if (c != c) return false; // NaN: a filter value that is not a number never matches a number
    return op == "eq" ? c == 0 : op == "neq" ? c != 0 : op == "lt" ? c < 0 : op == "lte" ? c <= 0 : op == "gt" ? c > 0 : op == "gte" && c >= 0;
  };
}

// A value compares as a number when the column's value is a number (NaN
// when the filter's value is not one), a json object as its compact JSON
// text, anything else as text.
function cmp(v: unknown, x: string): number {
  if (typeof v == "number") return /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(x) ? v - Number(x) : NaN;
  const s = typeof v == "object" ? JSON.stringify(v) : String(v);
  return s < x ? -1 : s > x ? 1 : 0;
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
