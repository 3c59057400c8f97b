import { execFile, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, open, readdir, readFile, rm, truncate, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join, resolve, sep } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

function commandWorks(command: string, args: string[]): boolean {
  return spawnSync(command, args, { stdio: "ignore" }).error === undefined;
}

/**
 * Why this machine cannot run the tmpfs fault tests, or null when it can: they mount
 * file systems, so they need root (or CAP_SYS_ADMIN) and a kernel that allows it.
 */
export function tmpfsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return "not running as root (mounting a tmpfs needs it)";
  const probe = spawnSync(
    "sh",
    ["-c", 'd=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs "$d" && umount "$d"; s=$?; rmdir "$d"; exit $s'],
    {
      stdio: "ignore",
    },
  );
  return probe.status === 0 ? null : "mount -t tmpfs failed (no CAP_SYS_ADMIN?)";
}

/** Why an ext4 image on a loop device cannot be used here, or null when it can. */
export function ext4LoopUnavailable(): string | null {
  const tmpfs = tmpfsUnavailable();
  if (tmpfs) return tmpfs;
  for (const [command, args] of [
    ["mkfs.ext4", ["-V"]],
    ["losetup", ["-V"]],
    ["e2fsck", ["-V"]],
  ] as const) {
    if (!commandWorks(command, [...args])) return `${command} is not installed`;
  }
  if (!existsSync("/dev/loop-control")) return "no loop device support (/dev/loop-control)";
  if (!existsSync("/sys/fs/ext4")) return "the kernel has no ext4 (/sys/fs/ext4)";
  return null;
}

/**
 * A small file system mounted on a fresh, empty directory of our own under the system
 * temp directory, for injecting storage faults under a running bridge. Never mounts
 * anywhere else; `dispose()` unmounts (lazily if something still holds it open) and
 * removes everything it created, and is safe to call more than once.
 */
export class ScratchMount {
  private mounted = false;
  private disposed = false;

  private constructor(
    /** The temp directory holding the mount point (and the ext4 image). */
    readonly base: string,
    /** Where the file system is mounted. */
    readonly dir: string,
    private readonly loopDevice: string | null,
  ) {}

  /** A tmpfs of `sizeKb` KiB. */
  static async tmpfs(sizeKb: number): Promise<ScratchMount> {
    const { base, dir } = await ScratchMount.freshMountPoint();
    const mount = new ScratchMount(base, dir, null);
    try {
      await run("mount", ["-t", "tmpfs", "-o", `size=${sizeKb}k,mode=0700`, "tmpfs", dir]);
      mount.mounted = true;
    } catch (err) {
      await mount.dispose();
      throw err;
    }
    return mount;
  }

  /**
   * ext4 in an image file on a loop device, mounted with `errors=remount-ro` (as a WB
   * controller's eMMC is): `forceReadOnly()` then does what the kernel does on a media error.
   */
  static async ext4(sizeMb: number): Promise<ScratchMount> {
    const { base, dir } = await ScratchMount.freshMountPoint();
    const image = join(base, "fs.img");
    let loop: string | null = null;
    try {
      await writeFile(image, "");
      await truncate(image, sizeMb * 1024 * 1024);
      await run("mkfs.ext4", ["-q", "-F", image]);
      loop = (await run("losetup", ["--find", "--show", image])).stdout.trim();
      if (!/^\/dev\/loop\d+$/.test(loop)) throw new Error(`losetup returned an unexpected device: ${JSON.stringify(loop)}`);
    } catch (err) {
      if (loop) await run("losetup", ["-d", loop]).catch((detachErr: unknown) => console.warn(`losetup -d ${loop}: ${String(detachErr)}`));
      await rm(base, { recursive: true, force: true });
      throw err;
    }
    const mount = new ScratchMount(base, dir, loop);
    try {
      await mount.mountExt4();
    } catch (err) {
      await mount.dispose();
      throw err;
    }
    return mount;
  }

  private static async freshMountPoint(): Promise<{ base: string; dir: string }> {
    const base = await mkdtemp(join(tmpdir(), "wb-fault-fs-"));
    const dir = join(base, "mnt");
    await mkdir(dir);
    // Belt and braces: the target is our own, new, empty directory under the temp dir.
    if (!resolve(dir).startsWith(resolve(tmpdir()) + sep) || (await readdir(dir)).length !== 0) {
      await rm(base, { recursive: true, force: true });
      throw new Error(`refusing to mount on ${dir}`);
    }
    return { base, dir };
  }

  private async mountExt4(): Promise<void> {
    if (!this.loopDevice) throw new Error("not an ext4 scratch mount");
    await run("mount", ["-t", "ext4", "-o", "errors=remount-ro", this.loopDevice, this.dir]);
    this.mounted = true;
  }

  /** Writes a file until the file system reports ENOSPC; returns its path. Nothing else can then grow. */
  async fill(): Promise<string> {
    const path = join(this.dir, "filler");
    const handle = await open(path, "a");
    try {
      // Large chunks first, then ever smaller ones, so the last partly used page is filled too.
      for (const size of [256 * 1024, 4096, 512, 1]) {
        const chunk = Buffer.alloc(size, 0x5a);
        for (;;) {
          try {
            await handle.write(chunk);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === "ENOSPC") break;
            throw err;
          }
        }
      }
    } finally {
      await handle.close();
    }
    return path;
  }

  async free(filler: string): Promise<void> {
    await unlink(filler);
  }

  /**
   * Makes the kernel turn the mounted ext4 read-only at once, open files and all, as it
   * does after a media error (`errors=remount-ro`). Writes then fail with EROFS until it is
   * unmounted: a plain `mount -o remount,ro` is refused (EBUSY) while the database is open.
   */
  async forceReadOnly(): Promise<void> {
    if (!this.loopDevice) throw new Error("forceReadOnly needs an ext4 scratch mount");
    await writeFile(`/sys/fs/ext4/${basename(this.loopDevice)}/trigger_fs_error`, "1");
    const options = (await readFile("/proc/mounts", "utf8"))
      .split("\n")
      .map((line) => line.split(" "))
      .find((fields) => fields[1] === this.dir)?.[3];
    if (!options?.split(",").some((o) => o === "ro" || o === "emergency_ro")) {
      throw new Error(`${this.dir} did not turn read-only (mount options: ${options ?? "not mounted"})`);
    }
  }

  /** Unmount, check and repair, mount again read-write: what a reboot of the controller does. */
  async repairAndRemount(): Promise<void> {
    if (!this.loopDevice) throw new Error("repairAndRemount needs an ext4 scratch mount");
    await run("umount", [this.dir]);
    this.mounted = false;
    // e2fsck exits 1 when it fixed something, which is expected after a forced error.
    await run("e2fsck", ["-f", "-y", this.loopDevice]).catch((err: { code?: number }) => {
      if (err.code !== 1) throw err;
    });
    await this.mountExt4();
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    if (this.mounted) {
      await run("umount", [this.dir]).catch(async () => {
        // Still held (a test failed before closing the bridge): detach now, freed when released.
        await run("umount", ["-l", this.dir]);
      });
      this.mounted = false;
    }
    // A detached, still-referenced loop device is released by the kernel once unused.
    const loop = this.loopDevice;
    if (loop) await run("losetup", ["-d", loop]).catch((err: unknown) => console.warn(`losetup -d ${loop}: ${String(err)}`));
    await rm(this.base, { recursive: true, force: true });
  }
}
