#!/usr/bin/env -S node --initial-old-space-size=64
// Runs the compiled CLI (npm run build writes dist/).
import "../dist/src/cli/main.js";
