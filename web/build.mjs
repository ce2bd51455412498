// Bundles the web phone with esbuild: one script per SIP stack, and the static files
// beside them, into build/ (never committed).  Run by "deploy/e2ae setup".
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";

mkdirSync("build", { recursive: true });
for (const [entry, out] of [["src/jssip_phone.js", "build/jssip_phone.js"],
                            ["src/sipjs_phone.js", "build/sipjs_phone.js"]]) {
  await build({
    entryPoints: [entry], outfile: out, bundle: true, platform: "browser", format: "iife",
    target: "chrome110", minify: true, sourcemap: false, legalComments: "inline", logLevel: "warning",
  });
}
for (const name of ["index.html", "phone.css"]) copyFileSync(`src/${name}`, `build/${name}`);
// The same page on each stack: index.html and jssip.html on JsSIP, sipjs.html on SIP.js.
const page = readFileSync("src/index.html", "utf8");
writeFileSync("build/jssip.html", page);
writeFileSync("build/sipjs.html", page.replace("jssip_phone.js", "sipjs_phone.js").replace("JsSIP over", "SIP.js over"));
