/** `HF_TOKEN`: validated without being shown, and kept out of every message. */
import { ConfigError } from '../errors.js'
import type { Env } from './hub.js'

/**
 * `HF_TOKEN`, trimmed. A header value is printable ASCII, and a token with a space or a line
 * break would be cut or rejected inside `fetch`, whose error repeats the header verbatim; so it is
 * refused here, with a message that shows no part of it.
 */
export function hubToken(env: Env): string | undefined {
  const token = env.HF_TOKEN?.trim()
  if (!token) return undefined
  if (!/^[\x21-\x7e]+$/.test(token)) {
    const why = 'a token is printable ASCII without spaces or line breaks (its value is not shown)'
    throw new ConfigError(
      `invalid environment variable \`HF_TOKEN\`: ${why}; check how it was set (a token pasted with a line break, or read from a file with a stray character)`,
      'HF_TOKEN',
      [`HF_TOKEN: ${why}`],
    )
  }
  return token
}

/** `text` with every occurrence of `secret` (also JSON-escaped) replaced by `[HF_TOKEN]`. */
export function redact(text: string, secret: string): string {
  return text.replaceAll(secret, '[HF_TOKEN]').replaceAll(JSON.stringify(secret).slice(1, -1), '[HF_TOKEN]')
}
