import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { requireTool } from "./server.js";

/** A certificate and its key, as PEM files. */
export interface Pair {
  readonly cert: string;
  readonly key: string;
}

/** Makes test certificates with Debian's openssl (ECDSA P-256, valid one day): a CA, and leaves it signs. */
export class Certificates {
  private readonly openssl = requireTool("openssl", "openssl");
  private serial = 1;

  constructor(private readonly dir: string) {}

  /** A CA (certificate + key) made for one test only, in `dir/name.pem` + `dir/name.key`. */
  ca(name: string): Pair {
    const pair = { cert: join(this.dir, `${name}.pem`), key: join(this.dir, `${name}.key`) };
    this.run([
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", `/CN=${name}`,
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
      "-keyout", pair.key, "-out", pair.cert,
    ]);
    return pair;
  }

  /** A leaf certificate for 127.0.0.1 signed by `ca`, usable by servers and clients, in `where/cert.pem` + `where/key.pem`. */
  leaf(ca: Pair, where: string, cn: string): Pair {
    mkdirSync(where, { recursive: true });
    const pair = { cert: join(where, "cert.pem"), key: join(where, "key.pem") };
    const csr = join(where, "req.csr");
    const ext = join(where, "ext.cnf");
    writeFileSync(ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n");
    this.run(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", `/CN=${cn}`, "-keyout", pair.key, "-out", csr]);
    this.run(["x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-set_serial", String(this.serial++), "-days", "1", "-extfile", ext, "-out", pair.cert]);
    return pair;
  }

  private run(args: string[]): void {
    execFileSync(this.openssl, args, { stdio: "pipe" });
  }
}
