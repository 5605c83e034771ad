/**
 * What an admin key may hold: printable ASCII without spaces. It travels in an HTTP header
 * (`Authorization`), which cannot carry a second line or non-Latin-1 text; the hub refuses any
 * other key at start, and the operator CLI before it sends one.
 */
export const ADMIN_KEY_PATTERN = /^[\x21-\x7e]+$/;
