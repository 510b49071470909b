import type { ClientHttp2Stream, Http2Session, ClientSessionRequestOptions, OutgoingHttpHeaders } from "node:http2";
import { Http2SessionManager } from "@connectrpc/connect-node";

/**
 * connect-node's Http2SessionManager, without one way to crash the process.
 *
 * When a server sends GOAWAY to an idle connection (it is shutting down or
 * closing idle connections), the manager destroys the session with an error
 * that Node emits on the next tick. If the manager leaves that session in the
 * same tick (a new call sees it destroyed and connects afresh, or the client
 * is closed), it removes its "error" listener first, and the error is emitted
 * with no listener: an uncaughtException (connect-node 2.1.2). Seen in a
 * chaos run; in a replica, the follower's sessions would take the server down.
 *
 * Every session that carried a call gets a listener of its own that stays:
 * what the session's errors mean for calls, the calls' streams report.
 */
export class GuardedHttp2Sessions extends Http2SessionManager {
  private readonly guarded = new WeakSet<Http2Session>();

  override async request(method: string, path: string, headers: OutgoingHttpHeaders, options: Omit<ClientSessionRequestOptions, "signal">): Promise<ClientHttp2Stream> {
    const stream = await super.request(method, path, headers, options);
    const session = stream.session;
    if (session !== undefined && !this.guarded.has(session)) {
      this.guarded.add(session);
      session.on("error", ignoreSessionError);
    }
    return stream;
  }
}

function ignoreSessionError(): void {}
