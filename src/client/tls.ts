import { readFileSync } from "node:fs";
import type * as http2 from "node:http2";
import { isIP } from "node:net";
import * as tls from "node:tls";

/** PEM files for a TLS client: the CA that verifies the server, and a client certificate for mutual TLS. */
export interface TlsClientFiles {
  /** CA bundle for the server's certificate; default: Node's built-in root CAs. */
  readonly caFile?: string;
  /** Client certificate and key, for a server that requires one (`--tls-client-ca`). */
  readonly certFile?: string;
  readonly keyFile?: string;
}

/** The files' contents, read now: `ca`, `cert`, `key` options for https and tls.connect. */
export function readTlsClientFiles(files: TlsClientFiles): tls.ConnectionOptions {
  return {
    ...(files.caFile !== undefined ? { ca: readFileSync(files.caFile) } : {}),
    ...(files.certFile !== undefined ? { cert: readFileSync(files.certFile) } : {}),
    ...(files.keyFile !== undefined ? { key: readFileSync(files.keyFile) } : {}),
  };
}

/**
 * `http2.connect` options (for an Http2SessionManager) that open each new
 * connection with TLS and ALPN h2, reading the files at every connection: a
 * long-lived client (a replica) picks up rotated certificates when it reconnects.
 */
export function http2TlsOptions(files: TlsClientFiles): http2.SecureClientSessionOptions {
  return {
    createConnection: (authority: URL) => {
      const host = authority.hostname.replace(/^\[(.*)\]$/, "$1");
      return tls.connect({
        host,
        port: authority.port === "" ? 443 : Number(authority.port),
        // SNI takes names only; an IP address is checked against the certificate's IP SANs.
        ...(isIP(host) === 0 ? { servername: host } : {}),
        ALPNProtocols: ["h2"],
        ...readTlsClientFiles(files),
      });
    },
  };
}
