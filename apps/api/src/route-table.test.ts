import { describe, expect, it } from 'vitest';
import { RouteTable } from './route-table.ts';

describe('RouteTable: the methods a concrete path answers', () => {
  const routes = new RouteTable();
  routes.add('POST', '/v1/connect/server/oauth/token');
  routes.add(['GET', 'HEAD'], '/v1/connect/server/users/:external_provider_id');
  routes.add('DELETE', '/v1/connect/server/users/:external_provider_id');
  routes.add('GET', '/admin/queues/*');

  it('matches parameters as one segment and wildcards as the rest', () => {
    expect(routes.allowedFor('/v1/connect/server/oauth/token')).toEqual(['POST']);
    expect(routes.allowedFor('/v1/connect/server/users/abc%20def')).toEqual(['DELETE', 'GET', 'HEAD']);
    expect(routes.allowedFor('/v1/connect/server/users/a/b')).toEqual([]);
    expect(routes.allowedFor('/admin/queues/api/queues')).toEqual(['GET']);
  });

  it('knows nothing of unknown paths, and treats dots literally', () => {
    expect(routes.allowedFor('/v1/connect/server/encounters')).toEqual([]);
    routes.add('GET', '/openapi.json');
    expect(routes.allowedFor('/openapiXjson')).toEqual([]);
  });
});
