/**
 * One attacker of `npm run attack`, in its own process so that its CPU does
 * not delay the probe's calls in bench/attack.ts: `node attack-client.js
 * '<AttackSpec as JSON>'`. Writes `{"event":"start"}` when its connections
 * are open and the attack begins, then `{"event":"result",...}` at the end.
 */
import { runAttack, type AttackSpec } from "./attack-wire.js";

const spec = JSON.parse(process.argv[2] ?? "{}") as AttackSpec;
const result = await runAttack(spec, () => process.stdout.write(`${JSON.stringify({ event: "start" })}\n`));
process.stdout.write(`${JSON.stringify({ event: "result", ...result })}\n`);
