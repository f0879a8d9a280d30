// The console in a real headless Chromium, driven by playwright-core. Run by
// tests/tests/console_browser.rs in two phases around a Terraform apply:
//
//   node console_flow.cjs signup   sign up (a refused password first), verify through the
//                                  mailed link, log in, create an API token
//   node console_flow.cjs card     (billing through localstripe) a declined card is refused with
//                                  a clear message, then a good card is saved through Stripe.js;
//                                  the billing contact is changed and the change is logged
//   node console_flow.cjs invoices the invoice Terraform's plan paid, the upcoming charge, and a
//                                  link to the invoice
//   node console_flow.cjs rest     log out, reset the password through the mailed link, log in,
//                                  change the email address, export the data, delete the account
//
// Everything comes from the environment (see `env` below); results go to OUT_FILE as JSON.
'use strict';

const fs = require('fs');
const path = require('path');
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const BASE = env('CONSOLE_URL');
const MAILDIR = env('MAILDIR');
const STATE_FILE = env('STATE_FILE');
const OUT_FILE = env('OUT_FILE');
const EMAIL = env('EMAIL');
const NEW_EMAIL = env('NEW_EMAIL');
const ORG = env('ORG');
const PASSWORD = env('PASSWORD');
const NEW_PASSWORD = env('NEW_PASSWORD');

function decodeQuotedPrintable(text) {
  const bytes = text
    .replace(/=\r?\n/g, '')
    .replace(/=([0-9A-F]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)));
  return Buffer.from(bytes, 'latin1').toString('utf8');
}

// The plain-text part of each delivered message, with its recipient and subject.
function readMail() {
  const out = [];
  for (const sub of ['new', 'cur']) {
    const dir = path.join(MAILDIR, sub);
    if (!fs.existsSync(dir)) continue;
    for (const name of fs.readdirSync(dir)) {
      const file = path.join(dir, name);
      const raw = fs.readFileSync(file, 'utf8');
      const header = (key) => (raw.match(new RegExp(`^${key}: (.*)$`, 'mi')) || [])[1] || '';
      const plain = raw.split(/Content-Type: text\/plain[^\n]*\n/i)[1] || '';
      const body = plain.split(/\n--/)[0];
      const text = /Content-Transfer-Encoding: quoted-printable/i.test(plain.slice(0, 200)) ? decodeQuotedPrintable(body) : body;
      out.push({ to: header('To'), subject: header('Subject'), text, mtime: fs.statSync(file).mtimeMs });
    }
  }
  return out.sort((a, b) => a.mtime - b.mtime);
}

async function waitForLink(to, subject, linkPath, skip = 0) {
  const deadline = Date.now() + 30000;
  for (;;) {
    const found = readMail().filter((m) => m.to.includes(to) && m.subject.includes(subject));
    if (found.length > skip) {
      const match = found[skip].text.match(new RegExp(`https?://\\S*${linkPath.replace(/\//g, '\\/')}\\?token=[0-9a-f]+`));
      if (!match) throw new Error(`no ${linkPath} link in mail "${subject}"`);
      return match[0];
    }
    if (Date.now() > deadline) throw new Error(`no mail to ${to} about "${subject}"`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function waitForMail(to, subject) {
  const deadline = Date.now() + 30000;
  while (!readMail().some((m) => m.to.includes(to) && m.subject.includes(subject))) {
    if (Date.now() > deadline) throw new Error(`no mail to ${to} about "${subject}"`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

async function expectText(page, text) {
  await page.getByText(text, { exact: false }).first().waitFor({ timeout: 10000 });
}

async function signupPhase(page) {
  await page.goto(`${BASE}/console/signup`);
  // Keyboard users reach the skip link first.
  await page.keyboard.press('Tab');
  expect((await page.evaluate(() => document.activeElement.textContent)) === 'Skip to content', 'the skip link comes first');

  await page.getByLabel('Email address').fill(EMAIL);
  await page.getByLabel('Your name').fill('Ada Operator');
  await page.getByLabel('Organization name').fill(ORG);
  await page.getByLabel('Password').fill('short');
  await page.getByLabel('I am at least 16 years old.').check();
  await page.getByLabel(/I accept the matrixhost customer terms/).check();
  await page.getByRole('button', { name: 'Create account' }).click();
  // The refusal sits next to the field, and the field says it is invalid.
  await expectText(page, 'must be at least 12 characters (R14)');
  expect((await page.getByLabel('Password').getAttribute('aria-invalid')) === 'true', 'the password field is marked invalid');
  expect((await page.getByLabel('Email address').inputValue()) === EMAIL, 'what was typed stays');

  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('heading', { name: 'Check your email' }).waitFor();

  const verify = await waitForLink(EMAIL, 'Verify your email', '/console/verify');
  await page.goto(verify);
  await page.getByRole('button', { name: 'Verify my email address' }).click();
  await expectText(page, 'Your email address is verified');

  await page.getByLabel('Email address').fill(EMAIL);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: `Organization ${ORG}` }).waitFor();

  await page.getByRole('link', { name: 'API tokens' }).click();
  await page.getByLabel('Name').fill('terraform from the browser');
  await page.getByLabel('Expires after').selectOption('30');
  await page.getByRole('button', { name: 'Create token' }).click();
  const token = (await page.locator('#new-token').textContent()).trim();
  expect(/^mh_[0-9a-f]{64}$/.test(token), 'a token is shown');
  await page.reload();
  expect(!(await page.content()).includes(token), 'the token is shown only once');
  return { token };
}

// localstripe's Stripe.js puts plain inputs into the card element; real Stripe.js an iframe.
async function typeCard(page, number) {
  const element = page.locator('#card-element');
  await element.locator('input[placeholder=number]').fill(number);
  await element.locator('input[placeholder=exp_month]').fill('12');
  await element.locator('input[placeholder=exp_year]').fill('34');
  await element.locator('input[placeholder=cvc]').fill('123');
  await element.locator('input[placeholder=postal_code]').fill('10001');
}

async function cardPhase(page) {
  await page.goto(`${BASE}/console/billing`);
  await expectText(page, 'No card on file yet');
  await page.locator('#card-element input').first().waitFor();

  await typeCard(page, env('DECLINED_CARD'));
  await page.getByRole('button', { name: 'Save the card' }).click();
  await expectText(page, 'Your card was not saved');
  const refusal = (await page.locator('#card-errors').textContent()).trim();
  expect(/declined/i.test(refusal) && /Nothing was charged/.test(refusal), `a clear message: ${refusal}`);
  expect(page.url().endsWith('/console/billing'), 'the page stays');

  await typeCard(page, env('GOOD_CARD'));
  await page.getByRole('button', { name: 'Save the card' }).click();
  await expectText(page, 'Your card was saved');
  const onFile = (await page.locator('#card-on-file').textContent()).trim();
  expect(onFile.includes('visa card ending in 4242'), `the card on file: ${onFile}`);
  expect(!(await page.content()).includes(env('GOOD_CARD')), 'the number is nowhere in the page');

  await page.getByLabel('Name', { exact: true }).fill('Accounts Payable');
  await page.getByLabel('Email address for invoices').fill('ap@acme.example');
  await page.getByRole('button', { name: 'Save the billing contact' }).click();
  await expectText(page, 'The billing contact was saved');
  const log = (await page.locator('#contact-log').textContent()).replace(/\s+/g, ' ');
  expect(log.includes(EMAIL) && log.includes('ap@acme.example') && log.includes('Accounts Payable'), `the change is logged: ${log}`);
  return { onFile, refusal };
}

async function invoicesPhase(page) {
  await page.goto(`${BASE}/console/billing`);
  await page.locator('#invoices').waitFor();
  const rows = await page.locator('table').filter({ hasText: 'Total' }).locator('tbody tr').allTextContents();
  expect(rows.length === 1 && rows[0].includes('paid'), `one paid invoice: ${rows}`);
  const upcoming = (await page.locator('section.upcoming').first().textContent()).replace(/\s+/g, ' ');
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().includes('/invoices/') && r.request().method() === 'GET'),
    page.getByRole('button', { name: 'View' }).first().click(),
  ]);
  const headers = response.headers();
  await page.getByRole('heading', { name: 'Invoice' }).waitFor();
  const invoiceText = (await page.locator('main').textContent()).replace(/\s+/g, ' ');
  return { invoiceUrl: page.url(), robots: headers['x-robots-tag'] || '', invoiceText, upcoming, rows };
}

async function restPhase(page) {
  await page.goto(`${BASE}/console`);
  await page.getByRole('heading', { name: `Organization ${ORG}` }).waitFor();
  await page.getByRole('button', { name: 'Log out' }).click();
  await expectText(page, 'You are logged out.');

  await page.getByRole('link', { name: 'Forgot your password?' }).click();
  await page.getByLabel('Email address').fill(EMAIL);
  await page.getByRole('button', { name: 'Send the link' }).click();
  await expectText(page, 'If that address has an account');
  const reset = await waitForLink(EMAIL, 'Reset your matrixhost password', '/console/reset/confirm');
  await page.goto(reset);
  await page.getByLabel('New password').fill(NEW_PASSWORD);
  await page.getByRole('button', { name: 'Set the new password' }).click();
  await expectText(page, 'Your password was changed');
  await waitForMail(EMAIL, 'Your matrixhost password was changed');

  await page.getByLabel('Email address').fill(EMAIL);
  await page.getByLabel('Password').fill(NEW_PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: `Organization ${ORG}` }).waitFor();

  await page.getByRole('link', { name: 'Account', exact: true }).click();
  await page.getByLabel('New email address').fill(NEW_EMAIL);
  await page.locator('form[action="/console/account/email"]').getByLabel('Current password').fill(NEW_PASSWORD);
  await page.getByRole('button', { name: 'Send the confirmation link' }).click();
  await expectText(page, 'We sent a link to the new address');
  await waitForMail(EMAIL, 'change of your matrixhost email address was requested');
  const confirm = await waitForLink(NEW_EMAIL, 'Confirm your new email address', '/console/email/confirm');
  await page.goto(confirm);
  await page.getByRole('button', { name: 'Make this my address' }).click();
  await page.getByRole('heading', { name: 'Your account' }).waitFor();
  await expectText(page, NEW_EMAIL);
  await waitForMail(EMAIL, 'Your matrixhost email address was changed');

  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Download my data' }).click()]);
  const exportFile = path.join(path.dirname(OUT_FILE), 'export.json');
  await download.saveAs(exportFile);

  await page.getByLabel("Type the organization's name to confirm").fill(ORG);
  await page.locator('form[action="/console/account/delete"]').getByLabel('Current password').fill(NEW_PASSWORD);
  await page.getByRole('button', { name: 'Delete my account' }).click();
  await expectText(page, 'will be erased on');
  return { exportFile };
}

(async () => {
  const phase = process.argv[2];
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext(phase === 'signup' ? { acceptDownloads: true } : { storageState: STATE_FILE, acceptDownloads: true });
    const page = await context.newPage();
    const phases = { signup: signupPhase, card: cardPhase, invoices: invoicesPhase, rest: restPhase };
    const result = await phases[phase](page);
    await context.storageState({ path: STATE_FILE });
    fs.writeFileSync(OUT_FILE, JSON.stringify(result));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
