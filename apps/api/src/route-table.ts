/**
 * The methods each known path answers, collected as routes are registered, so
 * that a request with a wrong method on a known path gets 405 and an `Allow`
 * header (RFC 9110 §15.5.6) instead of a 404 that suggests a wrong URL.
 */
export class RouteTable {
  private readonly routes: { method: string; pattern: RegExp }[] = [];

  add(methods: string | string[], url: string): void {
    // Fastify patterns: `:name` is one segment, `*` is the rest of the path.
    const source = url
      .split('/')
      .map((segment) => (segment.startsWith(':') ? '[^/]+' : segment === '*' ? '.*' : segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
      .join('/');
    const pattern = new RegExp(`^${source}/?$`);
    for (const method of [methods].flat()) this.routes.push({ method: method.toUpperCase(), pattern });
  }

  /** The methods `path` answers, in a stable order; empty for an unknown path. */
  allowedFor(path: string): string[] {
    const methods = new Set(this.routes.filter((r) => r.pattern.test(path)).map((r) => r.method));
    return [...methods].sort();
  }
}
