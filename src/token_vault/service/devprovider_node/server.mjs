// Keycloak-like OpenID provider for token-vault tests and dev mode.
//
// Built on oidc-provider (panva). Everything is in memory; a restart forgets all
// sessions, grants and tokens. NOT for production use.
//
// Configuration (environment variables; PORT may also be given as argv[2]):
//   PORT                         listen port (required)
//   HOST                         listen host and issuer host (default 127.0.0.1)
//   REALM                        realm name (default token-vault); issuer is
//                                http://HOST:PORT/realms/REALM
//   DEVPROVIDER_CLIENTS          JSON array of oidc-provider client metadata objects
//                                (default: see DEFAULT_CLIENTS below)
//   DEVPROVIDER_BACKCHANNEL_LOGOUT_URI
//                                backchannel_logout_uri for the default web client
//   DEVPROVIDER_REDIRECT_URIS    comma-separated redirect_uris for the default web client
//   DEVPROVIDER_RESOURCE         resource indicator (absolute URI) used by default for
//                                client_credentials (default urn:token-vault)
//   DEVPROVIDER_AUDIENCE         `aud` of the JWT access tokens issued for that resource
//                                (default token-vault)
//   DEVPROVIDER_RESOURCE_SCOPES  space-separated scopes the resource server accepts
//                                (default "vault:read vault:write vault:delete vault:token")
//   ACCESS_TOKEN_TTL             seconds (default 300); also client_credentials tokens
//   REFRESH_TOKEN_TTL            seconds (default 1800)
//   ID_TOKEN_TTL                 seconds (default ACCESS_TOKEN_TTL)
//   SESSION_TTL                  seconds (default 36000)
//   DEVPROVIDER_JWKS             path to a JWKS file with private signing key(s)
//                                (default: one RSA key generated at start)
//   DEVPROVIDER_COOKIE_KEYS      comma-separated cookie signing keys (default random)
//   DEVPROVIDER_TEST_HOOKS       "1" enables /__test__/{stats,reset,fail,delay}

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

function envInt(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number.parseInt(raw, 10);
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  }
  return value;
}

const PORT = envInt('PORT', Number.parseInt(process.argv[2] ?? '', 10) || undefined);
if (!PORT) {
  console.error('devprovider: PORT is required (env PORT or first argument)');
  process.exit(2);
}
const HOST = process.env.HOST || '127.0.0.1';
const REALM = process.env.REALM || 'token-vault';
const PREFIX = `/realms/${REALM}`;
const ISSUER = `http://${HOST.includes(':') ? `[${HOST}]` : HOST}:${PORT}${PREFIX}`;

const ACCESS_TOKEN_TTL = envInt('ACCESS_TOKEN_TTL', 300);
const REFRESH_TOKEN_TTL = envInt('REFRESH_TOKEN_TTL', 1800);
const ID_TOKEN_TTL = envInt('ID_TOKEN_TTL', ACCESS_TOKEN_TTL);
const SESSION_TTL = envInt('SESSION_TTL', 36000);

const RESOURCE = process.env.DEVPROVIDER_RESOURCE || 'urn:token-vault';
const AUDIENCE = process.env.DEVPROVIDER_AUDIENCE || 'token-vault';
const RESOURCE_SCOPES = (process.env.DEVPROVIDER_RESOURCE_SCOPES
  || 'vault:read vault:write vault:delete vault:token').split(/\s+/).filter(Boolean).join(' ');

const TEST_HOOKS = process.env.DEVPROVIDER_TEST_HOOKS === '1';

function defaultClients() {
  const redirectUris = (process.env.DEVPROVIDER_REDIRECT_URIS || 'http://127.0.0.1:8000/auth/callback')
    .split(',').map((s) => s.trim()).filter(Boolean);
  const web = {
    client_id: 'token-vault',
    client_secret: 'dev-secret',
    client_name: 'token-vault',
    redirect_uris: redirectUris,
    // After logout the browser may return to the front page of any app it logs in to.
    post_logout_redirect_uris: [...new Set(redirectUris.map((u) => `${new URL(u).origin}/`))],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    backchannel_logout_session_required: true,
  };
  if (process.env.DEVPROVIDER_BACKCHANNEL_LOGOUT_URI) {
    web.backchannel_logout_uri = process.env.DEVPROVIDER_BACKCHANNEL_LOGOUT_URI;
  }
  const caller = {
    client_id: 'token-vault-caller',
    client_secret: 'caller-secret',
    client_name: 'token-vault-caller',
    redirect_uris: [],
    response_types: [],
    grant_types: ['client_credentials'],
    token_endpoint_auth_method: 'client_secret_basic',
  };
  return [web, caller];
}

function loadClients() {
  const raw = process.env.DEVPROVIDER_CLIENTS;
  if (!raw) return defaultClients();
  const parsed = JSON.parse(raw);
  if (!Array.isArray(parsed)) throw new Error('DEVPROVIDER_CLIENTS must be a JSON array');
  return parsed.map((c) => {
    const client = { ...c };
    // Keycloak puts `sid` into every ID token; oidc-provider only for clients with
    // backchannel_logout_session_required (see includeSid patch below as well).
    if (client.backchannel_logout_session_required === undefined) {
      client.backchannel_logout_session_required = true;
    }
    const grants = client.grant_types || ['authorization_code'];
    if (!grants.includes('authorization_code') && !grants.includes('implicit')) {
      client.redirect_uris ??= [];
      client.response_types ??= [];
    }
    return client;
  });
}

function loadJwks() {
  const path = process.env.DEVPROVIDER_JWKS;
  if (path) return JSON.parse(readFileSync(path, 'utf8'));
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: `dev-${randomBytes(6).toString('hex')}`, use: 'sig', alg: 'RS256' }] };
}

const cookieKeys = process.env.DEVPROVIDER_COOKIE_KEYS
  ? process.env.DEVPROVIDER_COOKIE_KEYS.split(',')
  : [randomBytes(32).toString('base64url')];

const accountClaims = (sub) => ({
  sub,
  email: `${sub}@example.test`,
  email_verified: true,
  name: sub,
  preferred_username: sub,
});

const configuration = {
  clients: loadClients(),
  jwks: loadJwks(),
  cookies: { keys: cookieKeys },
  scopes: ['openid', 'profile', 'email', 'offline_access'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  // Keycloak puts profile/email claims into the ID token too.
  conformIdTokenClaims: false,
  routes: {
    authorization: '/protocol/openid-connect/auth',
    token: '/protocol/openid-connect/token',
    revocation: '/protocol/openid-connect/revoke',
    end_session: '/protocol/openid-connect/logout',
    jwks: '/protocol/openid-connect/certs',
    userinfo: '/protocol/openid-connect/userinfo',
    introspection: '/protocol/openid-connect/token/introspect',
  },
  pkce: { required: () => false },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Only client_credentials gets the API audience by default: the user-facing
      // access tokens stay usable at the userinfo endpoint.
      defaultResource(ctx, client, oneOf) {
        if (oneOf) return oneOf;
        if (ctx.oidc.params?.grant_type === 'client_credentials') return RESOURCE;
        return undefined;
      },
      useGrantedResource: () => false,
      getResourceServerInfo(ctx, indicator, client) {
        if (indicator !== RESOURCE) throw new errors.InvalidTarget();
        // Optional per-client restriction through the extra client metadata
        // `resource_scopes` (space-separated).
        let scope = RESOURCE_SCOPES;
        const own = client?.metadata?.().resource_scopes;
        if (typeof own === 'string') {
          const allowed = new Set(own.split(/\s+/));
          scope = RESOURCE_SCOPES.split(' ').filter((s) => allowed.has(s)).join(' ');
        }
        return {
          scope,
          audience: AUDIENCE,
          accessTokenFormat: 'jwt',
          accessTokenTTL: ACCESS_TOKEN_TTL,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  extraClientMetadata: {
    properties: ['resource_scopes'],
    validator(ctx, key, value) {
      if (key === 'resource_scopes' && value !== undefined && typeof value !== 'string') {
        throw new errors.InvalidClientMetadata('resource_scopes must be a string');
      }
    },
  },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return accountClaims(sub);
      },
    };
  },
  // Auto-consent: grant whatever the client asked for (first-party dev clients).
  async loadExistingGrant(ctx) {
    const { provider, client, session } = ctx.oidc;
    const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    let grant = grantId ? await provider.Grant.find(grantId) : undefined;
    if (!grant || grant.accountId !== session.accountId) {
      grant = new provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    }
    const oidcScopes = [...(ctx.oidc.requestParamOIDCScopes || [])];
    if (oidcScopes.length) grant.addOIDCScope(oidcScopes.join(' '));
    const claims = [...(ctx.oidc.requestParamClaims || [])];
    if (claims.length) grant.addOIDCClaims(claims);
    let resourceServers = {};
    try {
      resourceServers = ctx.oidc.resourceServers || {};
    } catch {
      resourceServers = {};
    }
    for (const [indicator, rs] of Object.entries(resourceServers)) {
      const wanted = [...(ctx.oidc.requestParamScopes || [])].filter((s) => rs.scopes.has(s));
      if (wanted.length) grant.addResourceScope(indicator, wanted.join(' '));
    }
    await grant.save();
    return grant;
  },
  // Like Keycloak: every client allowed the refresh_token grant gets one.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => true,
  ttl: {
    AccessToken: () => ACCESS_TOKEN_TTL,
    ClientCredentials: () => ACCESS_TOKEN_TTL,
    AuthorizationCode: () => 60,
    IdToken: () => ID_TOKEN_TTL,
    RefreshToken: () => REFRESH_TOKEN_TTL,
    Interaction: () => 3600,
    Session: () => SESSION_TTL,
    Grant: () => SESSION_TTL,
  },
  // The default fetch refuses loopback/private addresses (SSRF guard). This dev
  // provider must deliver back-channel logout tokens to 127.0.0.1, so drop the
  // guarded dispatcher and use plain fetch.
  fetch(url, options) {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  async renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
};

const provider = new Provider(ISSUER, configuration);
provider.proxy = false;

// Keycloak includes `sid` in every ID token, whether or not the client registered
// a backchannel_logout_uri.
const clientProto = provider.Client.prototype;
clientProto.includeSid = function includeSid() {
  return true;
};

// ---- test hooks state ----------------------------------------------------
const stats = {
  token_requests: {},
  token_requests_total: 0,
  token_errors: {},
  injected_failures: 0,
  revocation_requests: 0,
  introspection_requests: 0,
  backchannel_logout: { success: 0, error: 0 },
};
let failPlan = { status: 503, count: 0 };
// Answer the next `count` token requests only after `ms` milliseconds (a slow provider).
let delayPlan = { ms: 0, count: 0 };

function resetStats() {
  stats.token_requests = {};
  stats.token_requests_total = 0;
  stats.token_errors = {};
  stats.injected_failures = 0;
  stats.revocation_requests = 0;
  stats.introspection_requests = 0;
  stats.backchannel_logout = { success: 0, error: 0 };
  failPlan = { status: 503, count: 0 };
  delayPlan = { ms: 0, count: 0 };
}

function countToken(grantType) {
  const key = grantType || 'unknown';
  stats.token_requests[key] = (stats.token_requests[key] || 0) + 1;
  stats.token_requests_total += 1;
}

provider.on('backchannel.success', () => { stats.backchannel_logout.success += 1; });
provider.on('backchannel.error', (ctx, err, client) => {
  stats.backchannel_logout.error += 1;
  console.error(`devprovider: back-channel logout to ${client?.clientId} failed: ${err?.message}`);
});
provider.on('server_error', (ctx, err) => {
  console.error('devprovider: server_error', err);
});

// Keycloak-ish extras on the token endpoint response.
provider.use(async (ctx, next) => {
  await next();
  const route = ctx.oidc?.route;
  if (route === 'revocation') stats.revocation_requests += 1;
  if (route === 'introspection') stats.introspection_requests += 1;
  if (route !== 'token') return;

  const grantType = ctx.oidc.params?.grant_type;
  countToken(grantType);
  if (ctx.status !== 200) {
    const key = grantType || 'unknown';
    stats.token_errors[key] = (stats.token_errors[key] || 0) + 1;
    return;
  }
  const body = ctx.body;
  if (!body || typeof body !== 'object' || !body.access_token) return;

  const { RefreshToken: rt, AuthorizationCode: code } = ctx.oidc.entities;
  if (body.refresh_token && rt) {
    body.refresh_expires_in = rt.expiration ?? REFRESH_TOKEN_TTL;
  } else {
    body.refresh_expires_in = 0;
  }
  const sid = rt?.sid ?? code?.sid;
  if (sid) body.session_state = sid;
  body['not-before-policy'] = 0;
  ctx.body = body;
});

const callback = provider.callback();
const TOKEN_PATH = `${PREFIX}${configuration.routes.token}`;

function sendJson(res, status, payload) {
  const data = JSON.stringify(payload);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(data),
  });
  res.end(data);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function testHook(req, res, url) {
  const hook = url.pathname.slice('/__test__/'.length);
  if (hook === 'stats' && req.method === 'GET') {
    return sendJson(res, 200, { ...stats, pending_failures: { ...failPlan } });
  }
  if (hook === 'reset' && req.method === 'POST') {
    resetStats();
    return sendJson(res, 200, { ok: true });
  }
  if (hook === 'fail' && req.method === 'POST') {
    const status = Number.parseInt(url.searchParams.get('status') || '503', 10);
    const count = Number.parseInt(url.searchParams.get('count') || '1', 10);
    if (!(status >= 400 && status <= 599) || !(count >= 0)) {
      return sendJson(res, 400, { error: 'status must be 4xx/5xx and count >= 0' });
    }
    failPlan = { status, count };
    return sendJson(res, 200, { ok: true, ...failPlan });
  }
  if (hook === 'delay' && req.method === 'POST') {
    const ms = Number.parseInt(url.searchParams.get('ms') || '0', 10);
    const count = Number.parseInt(url.searchParams.get('count') || '1', 10);
    if (!(ms >= 0 && ms <= 120000) || !(count >= 0)) {
      return sendJson(res, 400, { error: 'ms must be 0-120000 and count >= 0' });
    }
    delayPlan = { ms, count };
    return sendJson(res, 200, { ok: true, ...delayPlan });
  }
  return sendJson(res, 404, { error: 'not_found' });
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://devprovider.invalid');
    if (TEST_HOOKS && url.pathname.startsWith('/__test__/')) {
      await testHook(req, res, url);
      return;
    }
    if (url.pathname === PREFIX || url.pathname.startsWith(`${PREFIX}/`)) {
      if (TEST_HOOKS && failPlan.count > 0 && req.method === 'POST' && url.pathname === TOKEN_PATH) {
        failPlan.count -= 1;
        const params = new URLSearchParams(await readBody(req));
        countToken(params.get('grant_type'));
        stats.injected_failures += 1;
        sendJson(res, failPlan.status, {
          error: 'temporarily_unavailable',
          error_description: `injected failure (HTTP ${failPlan.status})`,
        });
        return;
      }
      if (TEST_HOOKS && delayPlan.count > 0 && req.method === 'POST' && url.pathname === TOKEN_PATH) {
        delayPlan.count -= 1;
        await new Promise((resolve) => setTimeout(resolve, delayPlan.ms));
      }
      req.originalUrl = req.url;
      req.url = req.url.slice(PREFIX.length) || '/';
      callback(req, res);
      return;
    }
    sendJson(res, 404, { error: 'not_found', realm_path: PREFIX });
  } catch (err) {
    console.error('devprovider: request failed', err);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
    else res.end();
  }
});

server.listen(PORT, HOST, () => {
  console.log(`devprovider listening on ${ISSUER}`);
});

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
  console.log(`devprovider stopping (${signal})`);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
