// Public types of @pgrealtime/client (the wire format is docs/PROTOCOL.md).

/** A row as JSON: column name -> value. */
export type Row = Record<string, unknown>;

/** An INSERT, UPDATE, DELETE or TRUNCATE (PROTOCOL section 4). */
export interface RecordEvent {
  type: "record_event";
  collection: string;
  action: "create" | "update" | "delete" | "truncate";
  record_id?: string;
  record?: Row;
  old_record?: Row;
  unchanged_columns?: string[];
  timestamp: string;
  position: string;
}

/** A custom event (PROTOCOL section 5); only WAL events carry a position. */
export interface CustomEvent {
  type: "custom_event";
  collection: string;
  event: string;
  record_id?: string;
  data?: unknown;
  timestamp: string;
  position?: string;
  /** Never set; lets `e.action` be read on any event. */
  action?: undefined;
}

export type RealtimeEvent = RecordEvent | CustomEvent;

/**
 * Why something was refused or failed. `code` is a server error code
 * (invalid_topic, forbidden, too_many_subscriptions, invalid_token,
 * token_expired, bad_request, …), "revoked" (a new token may no longer read
 * the topic), "closed" (the server closed the connection for good: see
 * `closeCode`), "unauthorized" (the WebSocket upgrade was refused) or
 * "token" (getToken threw).
 */
export interface RealtimeError {
  code: string;
  message: string;
  topic?: string;
  closeCode?: number;
}

/** Where the client stands; see `onState`. */
export type State = "connecting" | "connected" | "reconnecting" | "closed";

export interface StateChange {
  state: State;
  /** The close code of the connection that just ended, if any. */
  code?: number;
  reason?: string;
  /** reconnecting: milliseconds until the next attempt. */
  delay?: number;
  /** connected: the server's connection id. */
  connectionId?: string;
  /** connected: the server's limits (PROTOCOL section 3). */
  limits?: { max_subscriptions: number; subscribe_rate: number; max_message_bytes: number };
}

/** localStorage, sessionStorage, or anything with the same three methods. */
export interface PositionStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** What the client needs of a WebSocket class (the browser's, or `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketClass = new (url: string) => WebSocketLike;

export interface ClientOptions {
  /** A fixed token (JWT). Without token and getToken: anonymous. */
  token?: string;
  /**
   * Returns a fresh token; called before connecting, before the current
   * token expires (sent as an `auth` message, the connection stays), and
   * after the server refused an expired one.
   */
  getToken?: () => string | Promise<string>;
  /** WebSocket implementation; default globalThis.WebSocket. */
  WebSocket?: WebSocketClass;
  /** Keep each topic's position here so that a page reload resumes. */
  storage?: PositionStorage;
  /** Prefix of the storage keys; default "pgrealtime:". */
  storageKey?: string;
  /** Errors that concern the whole client (auth, refused connection). */
  onError?: (err: RealtimeError) => void;
  /** First reconnect delay in ms (default 500); doubles up to maxDelay. */
  minDelay?: number;
  /** Longest reconnect delay in ms (default 30000). */
  maxDelay?: number;
  /** Ping interval in ms (default 25000); two silent intervals = lost. */
  pingInterval?: number;
}

export interface SubscribeOptions {
  /** Resume after this position (default: the stored one, if any). */
  since?: string;
  /** Each matching event, once, in position order. */
  onEvent: (event: RealtimeEvent) => void;
  /**
   * The server could not replay everything after `since`: events may have
   * been missed. Re-read your data; the subscription is live again (without
   * since) right after.
   */
  onGap?: (info: { since?: string }) => void;
  /** The subscription is live (again) on a connection, from `position`. */
  onLive?: (position: string | undefined) => void;
  /** The subscription was refused or revoked; it is over. */
  onError?: (err: RealtimeError) => void;
}

export interface Subscription {
  readonly topic: string;
  /** Position of the last event this subscription has seen everything up to. */
  readonly position: string | undefined;
  /** Stops delivery at once (and tells the server when no other subscription needs the topic). */
  unsubscribe(): void;
}

export interface AuthResult {
  subject: string;
  role: string;
  expires_at?: string;
  revoked: string[];
}

export interface Client {
  subscribe(topic: string, options: SubscribeOptions): Subscription;
  /** Calls fn on every state change; returns a function that stops that. */
  onState(fn: (change: StateChange) => void): () => void;
  readonly state: State;
  /** Sends a new token on the open connection (and uses it for reconnects). */
  auth(token: string): Promise<AuthResult>;
  /** Closes the connection for good. */
  close(): void;
}
