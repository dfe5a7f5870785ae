/**
 * What a `Host` header (an authority, `host[:port]`) names, for the checks that stop a web page
 * from reaching a local service through the browser (DNS rebinding, security.md §2.2).
 *
 * @since 0.1.0
 */

/** `host[:port]` exactly, so `[::1].evil.example` or `localhost@evil` never pass. */
const LOCAL_AUTHORITY = /^(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?$/i

/** Whether an authority names this machine's loopback: `localhost`, `127.0.0.1` or `[::1]`, with any port. */
export const isLocal = (authority: string): boolean => LOCAL_AUTHORITY.test(authority)
