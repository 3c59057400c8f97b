import { generateFernetKey } from "../state/fernet.js";
import type { GroupSpec } from "./args.js";
import { CliError, type CommandContext, loadCliConfig, withState } from "./context.js";
import { plural } from "./output.js";

export const keyGroup: GroupSpec<CommandContext> = {
  name: "key",
  summary: "Encryption keys for values at rest (Fernet; the first key of the list encrypts, all decrypt).",
  commands: [
    {
      name: "generate",
      summary: "print a new random key (only the key, so it can go straight into a key file)",
      async run(ctx) {
        const key = generateFernetKey();
        if (ctx.globals.json) ctx.out.raw(`${JSON.stringify({ key })}\n`);
        else ctx.out.raw(`${key}\n`);
      },
    },
    {
      name: "rotate",
      summary: "re-encrypt every value and history entry under the first configured key",
      notes: [
        'Put the new key first and keep the old ones after it (STATE_ENCRYPTION_KEY="new,old"),',
        "run this with the bridge stopped, then drop the old keys. Also encrypts a plain database.",
      ],
      async run(ctx) {
        const config = await loadCliConfig(ctx);
        if (config.secrets.encryptionKeys === null) {
          throw new CliError(
            `no encryption key is configured: set ${config.system.persistence.encryption.key_env} ` +
              "(or persistence.encryption.key_file) to the new key followed by the old ones",
          );
        }
        const { counts, keyId } = await withState(
          ctx,
          "write",
          async ({ store, codec }) => ({
            counts: await store.reencryptAll(),
            keyId: codec.keyId,
          }),
          config,
        );
        ctx.out.result(
          { ...counts, key_id: keyId },
          () =>
            `re-encrypted ${plural(counts.values, "value")} and ${plural(counts.history, "history entry", "history entries")} under key ${keyId ?? "?"}`,
        );
      },
    },
  ],
};
