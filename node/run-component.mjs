// Drives the transpiled token component on Node.js: acquire, cache hit,
// force refresh. Configuration from the environment; prints one JSON object.
//
//   TOKEN_COMPONENT_JS  path of the transpiled component's .js
//   BASE_URL, CLIENT_ID, CLIENT_SECRET, TOKEN_PATH
//   EVENTS_FILE         where event-sink.js appends the events
//
// The token endpoint must be another process: the component's calls block
// this thread, so a server in this process could never answer.
import { pathToFileURL } from 'node:url';

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set`);
    process.exit(2);
  }
  return value;
};

const { tokenManager } = await import(pathToFileURL(env('TOKEN_COMPONENT_JS')).href);
const manager = new tokenManager.Manager({
  baseUrl: env('BASE_URL'),
  clientId: env('CLIENT_ID'),
  clientSecret: env('CLIENT_SECRET'),
  tokenPath: env('TOKEN_PATH'),
  scope: undefined,
  audience: undefined,
  clientAuth: 'client-secret-post',
  refreshMarginSeconds: 300,
  maxAttempts: 3,
  backoffMultiplierMs: 10,
  backoffMinMs: 10,
  backoffMaxMs: 50,
  connectTimeoutMs: 5000,
  firstByteTimeoutMs: 5000,
  betweenBytesTimeoutMs: 5000,
  acquisitionDeadlineMs: 20000,
  failureCooldownSeconds: 30,
  invalidCredentialsCooldownSeconds: 60,
  refreshJitterPercent: 10,
});

const configured = manager.isConfigured();
const first = manager.getToken();
const cached = manager.getToken();
const refreshed = manager.forceRefresh();
const info = manager.tokenInfo();
console.log(JSON.stringify({
  configured,
  first,
  cached,
  refreshed,
  valid: manager.isTokenValid(),
  expiresAt: info ? Number(info.expiresAt) : null,
}));
