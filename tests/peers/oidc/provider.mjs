// A real OpenID provider (panva/oidc-provider) for Valet's integration tests.
//
// Configured by one JSON argument: { redirect_uris: [...], access_token_ttl, clients? }.
// Listens on 127.0.0.1:0 and prints `oidc-provider listening http://127.0.0.1:PORT` on stdout.
// GET /__test/stats returns token endpoint counters so tests can count refreshes;
// GET /__test/fail-token?status=N[&retry_after=S] makes the token endpoint answer N (with a
// Retry-After header when given) until set back to 0;
// GET /__test/tamper-nonce?on=1 rewrites the nonce of authorization requests;
// GET /__test/delay-token?ms=N slows the token endpoint down.
import Provider, { errors } from 'oidc-provider';
import { createServer } from 'node:http';

const opts = JSON.parse(process.argv[2] || '{}');
const redirectUris = opts.redirect_uris || [];
const stats = { token_requests: 0, grants: {} };
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
  scopes: ['openid', 'offline_access', 'profile', 'email', 'api.read', 'api.write'],
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
        if (resource !== 'https://api.valet.test') throw new errors.InvalidTarget();
        return { scope: 'api.read api.write', audience: resource, accessTokenFormat: 'opaque' };
      },
    },
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
});

provider.on('grant.success', (ctx) => {
  const gt = ctx.oidc.params.grant_type;
  stats.grants[gt] = (stats.grants[gt] || 0) + 1;
});
provider.on('grant.error', (ctx, err) => {
  const key = `${ctx.oidc.params?.grant_type}:${err.error}`;
  stats.grants[key] = (stats.grants[key] || 0) + 1;
});

provider.use(async (ctx, next) => {
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
