// A real OpenID provider (panva/oidc-provider) for Valet's integration tests.
//
// Configured by one JSON argument: { redirect_uris: [...], access_token_ttl, clients? }.
// Listens on 127.0.0.1:0 and prints `oidc-provider listening http://127.0.0.1:PORT` on stdout.
// GET /__test/stats returns token endpoint counters so tests can count refreshes;
// GET /__test/fail-token?status=N[&retry_after=S] makes the token endpoint answer N (with a
// Retry-After header when given) until set back to 0;
// GET /__test/tamper-nonce?on=1 rewrites the nonce of authorization requests;
// GET /__test/delay-token?ms=N slows the token endpoint down.
//
// Authorization server for MCP (MCP authorization spec 2025-11-25,
// https://modelcontextprotocol.io/specification/2025-11-25/basic/authorization):
// - open dynamic client registration (RFC 7591) at POST /reg, no initial access token;
// - Client ID Metadata Document (draft-02) advertised in discovery
//   (client_id_metadata_document_supported); opts.cimd_documents, { "<https url>": {doc} },
//   optionally serves documents from memory (the real fetch refuses loopback and http);
// - resources (RFC 8707): https://api.valet.test (opaque tokens, api.read api.write), and
//   ${issuer}/mcp and ${issuer}/mcp2 (JWT access tokens RS256 typ at+jwt, aud = the resource,
//   mcp.read mcp.write).
// - RFC 8414 metadata at /.well-known/oauth-authorization-server (served by oidc-provider
//   itself) as well as /.well-known/openid-configuration.
// MCP server doubles (protected resources, RFC 9728), any method:
// - /mcp, /mcp2: 401 `Bearer resource_metadata="${issuer}/.well-known/oauth-protected-resource/R",
//   scope="mcp.read"` without a bearer; 401 error="invalid_token" for a bad JWT; 403
//   error="insufficient_scope" when the token lacks a required scope; else 200
//   { ok, resource, sub, scope }. PRM at GET /.well-known/oauth-protected-resource/{mcp,mcp2}.
// - refusal doubles, always 401 with a resource_metadata URL:
//   /mcp-nopkce (AS ${issuer}/nopkce, RFC 8414 metadata without code_challenge_methods_supported
//   at /.well-known/oauth-authorization-server/nopkce), /mcp-plain (AS ${issuer}/nopkce-plain,
//   methods ["plain"]), /mcp-redirect (its PRM URL answers 302 to the /mcp PRM), /mcp-big (PRM
//   padded to about 2 MiB), /mcp-wrong-resource (PRM resource https://elsewhere.example/mcp).
// GET /__test/mcp?require_scope=a+b sets the scopes /mcp and /mcp2 require (default mcp.read);
// ?no_header=1 makes their 401/403 challenges omit resource_metadata (a bare `Bearer` when no
// token was sent); ?reset=1 restores the defaults. It answers with the current settings.
// /__test/stats also carries stats.mcp = { mcp: { ok, unauthorized, forbidden }, mcp2: {...} }.
import Provider, { errors } from 'oidc-provider';
import { createServer } from 'node:http';
import { createPublicKey, verify } from 'node:crypto';

const opts = JSON.parse(process.argv[2] || '{}');
const redirectUris = opts.redirect_uris || [];
const stats = {
  token_requests: 0,
  grants: {},
  mcp: {
    mcp: { ok: 0, unauthorized: 0, forbidden: 0 },
    mcp2: { ok: 0, unauthorized: 0, forbidden: 0 },
  },
};
// Set through GET /__test/fail-token?status=503 to make the token endpoint fail; 0 restores it.
let failTokenStatus = 0;
let failRetryAfter;
// Set through GET /__test/tamper-nonce?on=1: /auth then sees a different nonce than Valet sent,
// so the ID token it issues carries the wrong one.
let tamperNonce = false;
// Set through GET /__test/delay-token?ms=N: the token endpoint answers N ms late.
let tokenDelayMs = 0;

const server = createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

// MCP resources served by this process (exact strings: RFC 8707 values are compared as is).
const MCP_RESOURCES = { mcp: `${issuer}/mcp`, mcp2: `${issuer}/mcp2` };
const MCP_SCOPES = ['mcp.read', 'mcp.write'];
const DEFAULT_REQUIRED_SCOPES = ['mcp.read'];
// Set through GET /__test/mcp.
let mcpRequiredScopes = [...DEFAULT_REQUIRED_SCOPES];
let mcpNoHeader = false;
// Client ID Metadata Documents served from memory instead of fetched.
const cimdDocuments = opts.cimd_documents || {};

const client = (id, method) => ({
  client_id: id,
  client_secret: `${id}-secret-canary-0123456789`,
  redirect_uris: redirectUris,
  grant_types: [
    'authorization_code',
    'refresh_token',
    'client_credentials',
    'urn:ietf:params:oauth:grant-type:device_code',
  ],
  response_types: ['code'],
  token_endpoint_auth_method: method,
});

// A client authenticating with private_key_jwt (RFC 7523 section 2.2): the public half of
// tests/fixtures/test-ec-p256.pem, a test-only key.
const pkjwtClient = {
  ...client('pkjwt-client', 'private_key_jwt'),
  client_secret: undefined,
  token_endpoint_auth_signing_alg: 'ES256',
  jwks: {
    keys: [{
      kty: 'EC',
      crv: 'P-256',
      x: 'gqiOarERHXAqoYv5d-wwBAXUfFvky0XhozMw1jmUjc8',
      y: 'Otv7A6nVNkFmBWs3pPpLCXVZhDDRhVVBEri0IoWjLms',
      kid: 'valet-test-ec',
      use: 'sig',
    }],
  },
};

const provider = new Provider(issuer, {
  clients: [
    client('basic-client', 'client_secret_basic'),
    client('post-client', 'client_secret_post'),
    pkjwtClient,
  ],
  scopes: [
    'openid', 'offline_access', 'profile', 'email', 'api.read', 'api.write', ...MCP_SCOPES,
  ],
  claims: { openid: ['sub'], email: ['email'], profile: ['name'] },
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, email: `${sub}@example.test`, name: sub }),
  }),
  features: {
    devInteractions: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    clientCredentials: { enabled: true },
    deviceFlow: { enabled: true },
    // RFC 8707: one resource server, https://api.valet.test; any other resource is
    // invalid_target. Requests without a resource behave as before.
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf,
      useGrantedResource: async () => false,
      getResourceServerInfo: async (ctx, resource) => {
        if (resource === 'https://api.valet.test') {
          return { scope: 'api.read api.write', audience: resource, accessTokenFormat: 'opaque' };
        }
        // The MCP server doubles below: JWT access tokens (RFC 9068) they verify themselves.
        if (Object.values(MCP_RESOURCES).includes(resource)) {
          return {
            scope: MCP_SCOPES.join(' '),
            audience: resource,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        }
        throw new errors.InvalidTarget();
      },
    },
    // RFC 7591, open: no initial access token. Registered clients get refresh tokens when they
    // list the refresh_token grant (see issueRefreshToken).
    registration: { enabled: true },
    // draft-ietf-oauth-client-id-metadata-document-02 (experimental in oidc-provider).
    clientIdMetadataDocument: { enabled: true, ack: 'draft-02' },
  },
  // Serve opts.cimd_documents from memory; everything else goes through the default fetch
  // (the options carry oidc-provider's special-use-IP-refusing dispatcher).
  fetch: async (url, options) => {
    const doc = cimdDocuments[String(url)];
    if (doc) {
      return new Response(JSON.stringify(doc), {
        status: 200,
        headers: { 'content-type': 'application/json' },
      });
    }
    return globalThis.fetch(url, options);
  },
  // Issue refresh tokens whenever the client may use them (not only for offline_access).
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  ttl: {
    AccessToken: opts.access_token_ttl || 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 14 * 24 * 3600,
    Grant: 14 * 24 * 3600,
    Session: 3600,
    Interaction: 3600,
  },
  cookies: { keys: ['valet-test-cookie-key'] },
  pkce: { required: () => true },
  // Claims of the granted scopes (email) in the ID token too, as Google and most providers send
  // them: Valet shows the connected account's email per grant.
  conformIdTokenClaims: false,
});

provider.on('grant.success', (ctx) => {
  const gt = ctx.oidc.params.grant_type;
  stats.grants[gt] = (stats.grants[gt] || 0) + 1;
});
provider.on('grant.error', (ctx, err) => {
  const key = `${ctx.oidc.params?.grant_type}:${err.error}`;
  stats.grants[key] = (stats.grants[key] || 0) + 1;
});

// The provider's signing keys, fetched from its own jwks_uri over loopback (the keystore is
// private to oidc-provider) and fetched again when a token names an unknown kid.
let jwksCache = [];
async function findJwk(kid) {
  let jwk = jwksCache.find((k) => k.kid === kid);
  if (!jwk) {
    const res = await fetch(`${issuer}/jwks`);
    jwksCache = (await res.json()).keys || [];
    jwk = jwksCache.find((k) => k.kid === kid);
  }
  return jwk;
}

// Verifies a JWT access token (RFC 9068) for `audience`: typ at+jwt, RS256, signature against
// the provider's JWKS, iss, aud, exp. Returns the claims, or null.
async function verifyAccessToken(token, audience) {
  try {
    const parts = token.split('.');
    if (parts.length !== 3) return null;
    const [h, p, s] = parts;
    const header = JSON.parse(Buffer.from(h, 'base64url'));
    if (header.typ !== 'at+jwt' || header.alg !== 'RS256' || typeof header.kid !== 'string') {
      return null;
    }
    const jwk = await findJwk(header.kid);
    if (!jwk || jwk.kty !== 'RSA') return null;
    const key = createPublicKey({ key: jwk, format: 'jwk' });
    if (!verify('sha256', Buffer.from(`${h}.${p}`), key, Buffer.from(s, 'base64url'))) return null;
    const claims = JSON.parse(Buffer.from(p, 'base64url'));
    const now = Date.now() / 1000;
    if (claims.iss !== issuer || claims.aud !== audience) return null;
    if (typeof claims.exp !== 'number' || claims.exp <= now) return null;
    if (typeof claims.nbf === 'number' && claims.nbf > now) return null;
    return claims;
  } catch {
    return null;
  }
}

const prmUrl = (name) => `${issuer}/.well-known/oauth-protected-resource/${name}`;

// RFC 9728 section 2 protected resource metadata.
const prmDocument = (resource, authorizationServer) => ({
  resource,
  authorization_servers: [authorizationServer],
  scopes_supported: MCP_SCOPES,
  bearer_methods_supported: ['header'],
});

// RFC 8414 metadata of fake authorization servers whose PKCE support an MCP client must refuse
// (MCP 2025-11-25 "Authorization Code Protection": absent or S256-less
// code_challenge_methods_supported).
const fakeAsMetadata = (name, methods) => ({
  issuer: `${issuer}/${name}`,
  authorization_endpoint: `${issuer}/auth`,
  token_endpoint: `${issuer}/token`,
  registration_endpoint: `${issuer}/reg`,
  response_types_supported: ['code'],
  ...(methods ? { code_challenge_methods_supported: methods } : {}),
});

let bigPadding;

// Refusal doubles: MCP servers whose discovery an MCP client must refuse. Each always answers
// 401 with a resource_metadata URL (MCP 2025-11-25 "Protected Resource Metadata Discovery
// Requirements", RFC 9728 section 5.1); its PRM document (RFC 9728 section 3) is the trap.
const REFUSAL_DOUBLES = {
  // The AS has no code_challenge_methods_supported: the client MUST refuse to proceed.
  'mcp-nopkce': () => prmDocument(`${issuer}/mcp-nopkce`, `${issuer}/nopkce`),
  // The AS supports only plain PKCE: S256 is mandatory.
  'mcp-plain': () => prmDocument(`${issuer}/mcp-plain`, `${issuer}/nopkce-plain`),
  // The PRM URL redirects (handled below): metadata fetches must not follow redirects.
  'mcp-redirect': null,
  // A PRM document of about 2 MiB: metadata fetches must cap the body size.
  'mcp-big': () => {
    bigPadding ||= 'x'.repeat(2 * 1024 * 1024);
    return { ...prmDocument(`${issuer}/mcp-big`, issuer), padding: bigPadding };
  },
  // RFC 9728 section 3.3: `resource` differs from the requested URL, the data MUST NOT be used.
  'mcp-wrong-resource': () => prmDocument('https://elsewhere.example/mcp', issuer),
};

const bearerToken = (ctx) => {
  const m = /^Bearer +(\S+) *$/i.exec(ctx.get('authorization') || '');
  return m ? m[1] : undefined;
};

// An MCP server double (MCP authorization spec 2025-11-25, "Access Token Usage" and "Scope
// Challenge Handling"; RFC 6750 section 3 and RFC 9728 section 5.1 challenges).
async function serveMcp(ctx, name) {
  const resource = MCP_RESOURCES[name];
  const counters = stats.mcp[name];
  const metadataParam = mcpNoHeader ? '' : `resource_metadata="${prmUrl(name)}"`;
  const challenge = (...params) => {
    const all = [...params, metadataParam].filter(Boolean);
    return all.length ? `Bearer ${all.join(', ')}` : 'Bearer';
  };
  const token = bearerToken(ctx);
  if (!token) {
    counters.unauthorized += 1;
    ctx.status = 401;
    ctx.set('WWW-Authenticate', mcpNoHeader
      ? 'Bearer'
      : `Bearer ${metadataParam}, scope="${DEFAULT_REQUIRED_SCOPES.join(' ')}"`);
    ctx.body = { error: 'unauthorized' };
    return;
  }
  const claims = await verifyAccessToken(token, resource);
  if (!claims) {
    counters.unauthorized += 1;
    ctx.status = 401;
    ctx.set('WWW-Authenticate', challenge('error="invalid_token"'));
    ctx.body = { error: 'invalid_token' };
    return;
  }
  const granted = new Set(String(claims.scope || '').split(' ').filter(Boolean));
  if (!mcpRequiredScopes.every((s) => granted.has(s))) {
    counters.forbidden += 1;
    ctx.status = 403;
    ctx.set('WWW-Authenticate', challenge(
      'error="insufficient_scope"',
      `scope="${mcpRequiredScopes.join(' ')}"`,
    ));
    ctx.body = { error: 'insufficient_scope' };
    return;
  }
  counters.ok += 1;
  ctx.body = { ok: true, resource, sub: claims.sub, scope: claims.scope };
}

// Routes of the MCP server doubles; returns true when it answered.
async function mcpRoutes(ctx) {
  const { path } = ctx;
  if (path === '/__test/mcp') {
    if (ctx.query.reset === '1') {
      mcpRequiredScopes = [...DEFAULT_REQUIRED_SCOPES];
      mcpNoHeader = false;
    }
    if (typeof ctx.query.require_scope === 'string') {
      mcpRequiredScopes = ctx.query.require_scope.split(/\s+/).filter(Boolean);
    }
    if (ctx.query.no_header !== undefined) mcpNoHeader = ctx.query.no_header === '1';
    ctx.body = { require_scope: mcpRequiredScopes.join(' '), no_header: mcpNoHeader };
    return true;
  }
  const name = path.slice(1);
  if (MCP_RESOURCES[name]) {
    await serveMcp(ctx, name);
    return true;
  }
  if (Object.hasOwn(REFUSAL_DOUBLES, name)) {
    ctx.status = 401;
    ctx.set('WWW-Authenticate', `Bearer resource_metadata="${prmUrl(name)}", scope="mcp.read"`);
    ctx.body = { error: 'unauthorized' };
    return true;
  }
  const prmPrefix = '/.well-known/oauth-protected-resource/';
  if (ctx.method === 'GET' && path.startsWith(prmPrefix)) {
    const prmName = path.slice(prmPrefix.length);
    if (MCP_RESOURCES[prmName]) {
      // RFC 9728 section 3: `resource` is the URL the suffix was inserted into.
      ctx.body = prmDocument(MCP_RESOURCES[prmName], issuer);
      return true;
    }
    if (prmName === 'mcp-redirect') {
      ctx.status = 302;
      ctx.set('Location', prmUrl('mcp'));
      ctx.body = '';
      return true;
    }
    if (REFUSAL_DOUBLES[prmName]) {
      ctx.body = REFUSAL_DOUBLES[prmName]();
      return true;
    }
    return false;
  }
  // RFC 8414 section 3 path-inserted metadata of the fake authorization servers.
  if (ctx.method === 'GET' && path === '/.well-known/oauth-authorization-server/nopkce') {
    ctx.body = fakeAsMetadata('nopkce');
    return true;
  }
  if (ctx.method === 'GET' && path === '/.well-known/oauth-authorization-server/nopkce-plain') {
    ctx.body = fakeAsMetadata('nopkce-plain', ['plain']);
    return true;
  }
  return false;
}

provider.use(async (ctx, next) => {
  if (await mcpRoutes(ctx)) return;
  if (ctx.path === '/__test/stats') {
    ctx.body = stats;
    return;
  }
  if (ctx.path === '/token' && ctx.method === 'POST') stats.token_requests += 1;
  if (ctx.path === '/__test/fail-token') {
    failTokenStatus = Number(ctx.query.status || 0);
    failRetryAfter = ctx.query.retry_after;
    ctx.body = { fail_token_status: failTokenStatus };
    return;
  }
  if (ctx.path === '/__test/delay-token') {
    tokenDelayMs = Number(ctx.query.ms || 0);
    ctx.body = { token_delay_ms: tokenDelayMs };
    return;
  }
  if (tokenDelayMs && ctx.path === '/token') {
    await new Promise((resolve) => setTimeout(resolve, tokenDelayMs));
    // A client that went away meanwhile (a killed daemon) never reached the grant: nothing is
    // consumed, as when a connection drops before the request is processed.
    if (ctx.req.socket.destroyed) return;
  }
  if (ctx.path === '/__test/tamper-nonce') {
    tamperNonce = ctx.query.on === '1';
    ctx.body = { tamper_nonce: tamperNonce };
    return;
  }
  if (tamperNonce && ctx.path === '/auth' && ctx.query.nonce) {
    ctx.query = { ...ctx.query, nonce: 'tampered-nonce' };
  }
  if (failTokenStatus && ctx.path === '/token') {
    ctx.status = failTokenStatus;
    if (failRetryAfter) ctx.set('Retry-After', failRetryAfter);
    ctx.body = 'failing on purpose';
    return;
  }
  await next();
});

server.on('request', provider.callback());
console.log(`oidc-provider listening ${issuer}`);
