import { pino, type Logger } from 'pino';

export type { Logger };

/** Structured JSON logs on stdout. Key material never reaches them: SecretKey prints `<redacted>`. */
export function createLogger(name: string, level = process.env.VEIL_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level, base: { pid: process.pid } });
}
