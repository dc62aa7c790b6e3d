// Drives the dashboard in Debian's Chromium: the token prompt, both pools
// and their weights, a weight change arriving live, the rollback button
// (with its confirmation), a failed request's id in the errors panel, the
// banner of an automatic rollback, a deployment in the history and a
// rollout as its steps. Usage: node dashboard.mjs ADMIN_URL
// TOKEN SCREENSHOT. Exits non-zero with a message on any failure.
import { chromium } from "playwright-core";

const [adminUrl, token, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const fail = async (page, message) => {
  if (page) await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
  console.error(message);
  await browser.close();
  process.exit(1);
};
// The page's CSP forbids eval, which Playwright's waitForFunction uses.
const page = await (await browser.newContext({ bypassCSP: true })).newPage();
const dialogs = [];
page.on("dialog", (d) => { dialogs.push(d.message()); d.accept(); });
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));

const weight = (pool) => page.locator(`[data-pool="${pool}"] .weight`);
const expectWeights = async (blue, green) => {
  try {
    await page.waitForFunction(
      ([b, g]) =>
        document.querySelector('[data-pool="blue"] .weight')?.dataset.weight === String(b) &&
        document.querySelector('[data-pool="green"] .weight')?.dataset.weight === String(g),
      [blue, green],
      { timeout: 10000 },
    );
  } catch (e) {
    console.error(String(e));
    const shown = [await weight("blue").textContent().catch(() => "?"), await weight("green").textContent().catch(() => "?")];
    await fail(page, `expected blue ${blue}% green ${green}%, the page shows ${shown}`);
  }
};

await page.goto(adminUrl + "/");
// Without a token: only the prompt.
if (!(await page.locator("#login").isVisible()) || (await page.locator("#app").isVisible())) {
  await fail(page, "without a token the page shows more than the prompt");
}
await page.fill("#token", "wrong-token");
await page.click("#login-form button");
await page.waitForSelector("#login-error:has-text('not accepted')", { timeout: 5000 }).catch(() => fail(page, "a wrong token was not refused"));
await page.fill("#token", token);
await page.click("#login-form button");
await page.waitForSelector("#app:not(.hidden)", { timeout: 10000 }).catch(() => fail(page, "the dashboard never opened"));
await expectWeights(100, 0);

// The guard's rollback of the failing canary, with its measured reason.
await page.waitForSelector("#rollback-banner:not(.hidden):has-text('Automatic rollback')", { timeout: 10000 })
  .catch(() => fail(page, "no banner for the automatic rollback"));
const banner = await page.locator("#rollback-banner").textContent();
if (!banner.includes("error ratio")) await fail(page, "the banner does not say why: " + banner);

// The charts start full, from the server's last minute, with the rollback
// thresholds on them (rollback.max_error_ratio's default 0.01 → 1%).
const points = Number(await page.locator("#chart-rate").getAttribute("data-points"));
if (!(points >= 40)) await fail(page, `the rate chart opened with ${points} points, not the last minute`);
if ((await page.locator("#chart-errors").getAttribute("data-threshold")) !== "1") {
  await fail(page, "the error chart has no rollback threshold");
}

// A change made elsewhere arrives through the event stream.
const put = await fetch(adminUrl + "/api/v1/weights", {
  method: "PUT",
  headers: { authorization: "Bearer " + token, "content-type": "application/json" },
  body: JSON.stringify({ weights: { blue: 60, green: 40 } }),
});
if (put.status !== 200) await fail(page, "PUT /weights answered " + put.status);
await expectWeights(60, 40);

// The rollback button asks first, then restores the weights.
await page.click("#rollback");
await expectWeights(100, 0);
if (!dialogs.some((m) => m.toLowerCase().includes("roll back"))) await fail(page, "no confirmation was asked: " + dialogs);

// The failed request, by its id, in the errors panel.
await page.waitForSelector("#errors td.request-id:has-text('dash-err-1')", { timeout: 10000 })
  .catch(() => fail(page, "the failed request never showed in the errors panel"));

// Live charts get data.
await page.waitForFunction(() => document.querySelector("#legend")?.textContent.includes("blue"), null, { timeout: 10000 })
  .catch(() => fail(page, "the live charts never got data"));
// A new version deployed to the idle pool joins the history's timeline.
const deploy = await fetch(adminUrl + "/api/v1/pools/green", {
  method: "PUT",
  headers: { authorization: "Bearer " + token, "content-type": "application/json" },
  body: JSON.stringify({ version: "green-v2" }),
});
if (deploy.status !== 200) await fail(page, "PUT /pools/green answered " + deploy.status + " " + (await deploy.text()));
await page.waitForSelector("#history li[data-pool='green'][data-version='green-v2']", { timeout: 10000 })
  .catch(() => fail(page, "the deployment never showed in the history"));

// A rollout shows as its steps: the first current (with its hold), the second next.
const start = await fetch(adminUrl + "/api/v1/rollouts", {
  method: "POST",
  headers: { authorization: "Bearer " + token, "content-type": "application/json" },
  body: JSON.stringify({
    from: "blue", to: "green", health_gate: "10s",
    steps: [{ weight: 10, hold: "1h" }, { weight: 50, hold: "1h" }],
  }),
});
if (start.status !== 201 && start.status !== 200) await fail(page, "POST /rollouts answered " + start.status + " " + (await start.text()));
await page.waitForSelector("#rollout-steps li.current[data-step='1']", { timeout: 15000 })
  .catch(() => fail(page, "the rollout's first step never showed as current"));
if ((await page.locator("#rollout-steps li.next[data-step='2']").count()) !== 1) {
  await fail(page, "the rollout's second step is not shown as next");
}
// The current step says what is left of its hour (refreshed every 2 s).
await page.waitForSelector("#rollout-steps li.current #rollout-hold", { timeout: 10000 })
  .catch(() => fail(page, "the current step's hold never showed"));
const hold = await page.locator("#rollout-hold").textContent();
if (!/^hold: (1h 00m|59m \d\ds) left$/.test(hold.trim())) await fail(page, "the hold reads " + JSON.stringify(hold));
await page.screenshot({ path: screenshot, fullPage: true });
if (errors.length) await fail(page, "page errors: " + errors.join("; "));
await browser.close();
console.log("dashboard ok; screenshot " + screenshot);
