// A web page that calls RippleCache from the browser with connect-web, over
// the Connect protocol and over gRPC-Web. Build: see examples/browser/README.md.
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { CacheService } from "../../src/gen/ripplecache/v1/cache_pb.js";

type Kind = "connect" | "grpc-web";

// The server to call: ?server=http://host:port (it must list this page's origin in --cors-allowed-origins).
const params = new URLSearchParams(location.search);
const baseUrl = params.get("server") ?? "http://127.0.0.1:7420";
const token = params.get("token") ?? undefined;

function transport(kind: Kind): Transport {
  // A bearer token, when the server wants one, goes in the Authorization header.
  const bearer: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const interceptors = token === undefined ? [] : [bearer];
  return kind === "connect" ? createConnectTransport({ baseUrl, interceptors }) : createGrpcWebTransport({ baseUrl, interceptors });
}

const clients: Record<Kind, Client<typeof CacheService>> = {
  connect: createClient(CacheService, transport("connect")),
  "grpc-web": createClient(CacheService, transport("grpc-web")),
};

const text = new TextEncoder();
const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

/** Set, Get, a miss and an invalid request, as a user's page would make them; what each answered. */
async function tour(kind: Kind, key: string) {
  const client = clients[kind];
  const set = await client.set({ key, value: text.encode(`hello from ${kind}`) });
  const got = await client.get({ key });
  const miss = await client.get({ key: `${key}/missing` });
  let error: { code: string; message: string } | undefined;
  try {
    await client.get({ key: "" });
  } catch (err) {
    const e = ConnectError.from(err);
    error = { code: Code[e.code], message: e.rawMessage };
  }
  return { revision: String(set.revision), value: decode(got.value), found: got.found, missFound: miss.found, error };
}

/** Follows a Watch on a prefix until its first change; resolves with that change. */
async function watchFirst(kind: Kind, prefix: string) {
  for await (const res of clients[kind].watch({ target: { case: "prefix", value: prefix }, withValues: true })) {
    if (res.kind.case === "events" && res.kind.value.events.length > 0) {
      const e = res.kind.value.events[0];
      return { key: e.key, value: decode(e.value), revision: String(e.revision) };
    }
  }
  throw new Error("the watch ended without an event");
}

/** Any call's failure as the page sees it (a refused origin: the browser's "Failed to fetch"). */
async function attempt(fn: () => Promise<unknown>) {
  try {
    return { ok: true, result: await fn() };
  } catch (err) {
    const e = ConnectError.from(err);
    return { ok: false, code: Code[e.code], message: e.rawMessage };
  }
}

// For tests and the console: window.ripplecache.tour("connect", "k").
Object.assign(globalThis, { ripplecache: { tour, watchFirst, attempt, baseUrl } });

// The page's own form.
const $ = (id: string) => document.getElementById(id) as HTMLInputElement;
const log = (line: string) => ($("log").textContent = `${line}\n${$("log").textContent}`);
document.getElementById("server")!.textContent = baseUrl;
document.getElementById("get")?.addEventListener("click", async () => {
  const r = await attempt(() => clients[$("kind").value as Kind].get({ key: $("key").value }));
  log(r.ok ? `get ${$("key").value}: ${(r.result as any).found ? decode((r.result as any).value) : "(miss)"}` : `error ${r.code}: ${r.message}`);
});
document.getElementById("set")?.addEventListener("click", async () => {
  const r = await attempt(() => clients[$("kind").value as Kind].set({ key: $("key").value, value: text.encode($("value").value) }));
  log(r.ok ? `set ${$("key").value}: revision ${(r.result as any).revision}` : `error ${r.code}: ${r.message}`);
});
document.getElementById("watch")?.addEventListener("click", async () => {
  const kind = $("kind").value as Kind;
  log(`watching ${$("key").value}...`);
  try {
    for await (const res of clients[kind].watch({ target: { case: "prefix", value: $("key").value }, withValues: true })) {
      if (res.kind.case !== "events") continue;
      for (const e of res.kind.value.events) log(`watch: ${e.key} = ${decode(e.value)} (revision ${e.revision})`);
    }
  } catch (err) {
    log(`watch ended: ${ConnectError.from(err).message}`);
  }
});
