// Drives Debian's Chromium with playwright-core for the tests and the README's screenshot.
//
//   node web/driver.mjs '{"executablePath": "/usr/bin/chromium", "args": [...], "url": "..."}'
//
// Launches Chromium headless (never a downloaded browser) with a fresh profile, opens
// the URL, prints {"ready": true} and then answers one JSON command per stdin line:
//   {"id": 1, "eval": "js expression"}      -> {"id": 1, "value": ...} (promises awaited)
//   {"id": 2, "screenshot": "/path.png"}     -> {"id": 2, "value": "/path.png"}
//   {"id": 3, "goto": "url"}                 -> {"id": 3, "value": "url"}
// An error comes back as {"id": n, "error": "text"}.  End of stdin closes Chromium.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import readline from "node:readline";

const options = JSON.parse(process.argv[2] || "{}");
const profile = mkdtempSync(join(tmpdir(), "e2ae-pw-"));
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: options.executablePath || "/usr/bin/chromium", headless: true,
    args: options.args || [], viewport: options.viewport || { width: 900, height: 640 },
    ignoreHTTPSErrors: Boolean(options.ignoreHTTPSErrors),
  });
} catch (e) {
  out({ ready: false, error: String(e.message || e) });
  process.exit(1);
}
const page = context.pages()[0] || await context.newPage();
const consoleLines = [];
page.on("console", (m) => { consoleLines.push(`${m.type()}: ${m.text()}`); if (consoleLines.length > 500) consoleLines.shift(); });
page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
if (options.url) await page.goto(options.url, { waitUntil: "load" });
out({ ready: true });

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const cmd = JSON.parse(line);
  try {
    let value;
    if (cmd.eval !== undefined) value = await page.evaluate(cmd.eval);
    else if (cmd.screenshot) value = (await page.screenshot({ path: cmd.screenshot }), cmd.screenshot);
    else if (cmd.goto) value = (await page.goto(cmd.goto, { waitUntil: "load" }), cmd.goto);
    else if (cmd.console) value = consoleLines.slice();
    out({ id: cmd.id, value: value === undefined ? null : value });
  } catch (e) {
    out({ id: cmd.id, error: String(e.message || e) });
  }
}
await context.close().catch(() => {});
rmSync(profile, { recursive: true, force: true });
