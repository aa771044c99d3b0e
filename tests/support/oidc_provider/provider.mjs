// The OpenID Provider of the tests: npm oidc-provider on loopback, configured by one
// JSON file the test fixture writes (tests/support/oidc.py):
//   {port, issuer, audience, scopes, access_token_ttl, jwks: {keys: [private JWKs]},
//    clients: [oidc-provider client metadata],
//    accounts: {login: {claims: {...}, token_claims: {...}}},
//    client_token_claims: {client_id: {...}}}
// The first key of each type signs. Users sign in on the provider's development
// login page (any password); access tokens are JWTs for `audience` (RFC 9068), with
// the account's (or the client's) `token_claims` added.
import fs from 'node:fs';
import Provider, { errors } from 'oidc-provider';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const accounts = cfg.accounts || {};
const clientClaims = cfg.client_token_claims || {};

const configuration = {
  clients: cfg.clients,
  jwks: cfg.jwks,
  cookies: { keys: ['test-provider-cookie-key'] },
  claims: { openid: ['sub'], profile: ['name'] },
  scopes: ['openid', 'offline_access', ...cfg.scopes],
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...((accounts[id] || {}).claims || {}) };
      },
    };
  },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => cfg.audience,
      useGrantedResource: () => true,
      getResourceServerInfo(_ctx, resource) {
        if (resource !== cfg.audience) throw new errors.InvalidTarget();
        return {
          scope: cfg.scopes.join(' '),
          audience: cfg.audience,
          accessTokenTTL: cfg.access_token_ttl || 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: cfg.alg || 'RS256' } },
        };
      },
    },
  },
  async extraTokenClaims(_ctx, token) {
    if (token.accountId) return (accounts[token.accountId] || {}).token_claims;
    return clientClaims[token.clientId];
  },
  pkce: { required: () => true },
  // Public browser clients get refresh tokens, as Keycloak gives them by default.
  async issueRefreshToken(_ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  // Browsers may call the token endpoint from the origin of a public client's redirect URI.
  clientBasedCORS(_ctx, origin, client) {
    return client.clientAuthMethod === 'none'
      && client.redirectUris.some((uri) => new URL(uri).origin === origin);
  },
  ttl: { AccessToken: cfg.access_token_ttl || 600, ClientCredentials: cfg.access_token_ttl || 600 },
};

const provider = new Provider(cfg.issuer, configuration);
provider.on('server_error', (_ctx, err) => console.error('server_error', err));
provider.on('grant.error', (_ctx, err) => console.error('grant.error', err.message, err.error_description || ''));
const server = provider.listen(cfg.port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${cfg.issuer}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
