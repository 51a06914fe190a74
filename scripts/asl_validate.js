#!/usr/bin/env node
// Validate Amazon States Language definitions with asl-validator (pinned in package.json).
// stdin: [{"name": "...", "definition": {...}}, ...]
// stdout: [{"name": "...", "errors": [{"code": "...", "message": "..."}]}, ...]
// One Node process for every definition of an app: starting Node per definition would cost more than checking.
"use strict";

const validator = require("asl-validator");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const results = JSON.parse(input).map(({ name, definition }) => {
    const { errors } = validator(definition, { checkPaths: true, checkArn: true });
    return { name, errors: errors.map((e) => ({ code: e["Error code"], message: e.Message })) };
  });
  process.stdout.write(JSON.stringify(results));
});
