// Loads the page in the machine's Chromium (headless, a fresh profile) and
// prints what it shows as JSON: {"status": "...", "log": {"id": "text"}}.
// Usage: node drive.mjs <page-url> <chromium-path> <profile-dir>
import { chromium } from "playwright-core";

const [url, executablePath, profile] = process.argv.slice(2);
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = await context.newPage();
  page.on("console", (message) => console.error(`console.${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => console.error(`page error: ${error}`));
  await page.goto(url);
  await page.waitForFunction(
    () => document.getElementById("status")?.textContent !== "running",
    null,
    { timeout: 30_000 },
  );
  const shown = await page.evaluate(() => ({
    status: document.getElementById("status").textContent,
    log: Object.fromEntries([...document.querySelectorAll("#log li")].map((li) => [li.id, li.textContent])),
  }));
  console.log(JSON.stringify(shown));
} finally {
  await context.close();
}
