// Type check of the public API as an application uses it (tsc --noEmit).
import { createClient, type RealtimeEvent, type StateChange, type Subscription, type RealtimeError } from "@pgrealtime/client";

const rt = createClient("wss://example.com/realtime", {
  getToken: async () => "jwt",
  storage: localStorage,
  onError: (e: RealtimeError) => console.error(e.code, e.message, e.topic, e.closeCode),
});
const sub: Subscription = rt.subscribe("posts.*", {
  since: "0/16B3748:2",
  onEvent(e: RealtimeEvent) {
    if (e.type === "record_event") {
      const action: "create" | "update" | "delete" | "truncate" = e.action;
      console.log(action, e.record_id, e.record?.title, e.old_record, e.position.length);
    } else {
      console.log(e.event, e.data, e.position ?? "live only");
    }
  },
  onGap: ({ since }) => console.log("reload, missed after", since),
  onLive: (position) => console.log("live from", position),
});
const p: string | undefined = sub.position;
const stop: () => void = rt.onState((c: StateChange) => {
  if (c.state === "reconnecting") console.log(c.code, c.delay);
  if (c.state === "connected") console.log(c.connectionId, c.limits?.max_subscriptions);
});
rt.auth("new-jwt").then((r) => console.log(r.subject, r.role, r.revoked.length));
sub.unsubscribe();
stop();
rt.close();
console.log(p, rt.state satisfies "connecting" | "connected" | "reconnecting" | "closed");

// A WebSocket implementation can be passed in (e.g. the ws package).
declare const WS: new (url: string) => WebSocket;
createClient("ws://localhost:8080/realtime", { token: "jwt", WebSocket: WS });

// Mistakes the types catch.
// @ts-expect-error onEvent is required
rt.subscribe("posts.*", {});
// @ts-expect-error a topic is a string
rt.subscribe(42, { onEvent() {} });
// @ts-expect-error no such option
createClient("ws://x", { tokne: "jwt" });
// @ts-expect-error states are a closed set
const s: StateChange = { state: "open" };
console.log(s);
