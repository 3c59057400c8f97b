/**
 * For a describe block that needs one of the machine's servers: under CI a missing server
 * fails the run; elsewhere its tests are skipped with the reason printed.
 */
export async function requireService(name: string, unavailable: () => Promise<string | null>): Promise<boolean> {
  const reason = await unavailable();
  if (reason === null) return true;
  if (process.env.CI) throw new Error(`${reason} (CI needs ${name}; .ci/run starts it)`);
  console.warn(`skipping ${name} tests: ${reason}`);
  return false;
}
