//! Commands the agent starts on an operator's behalf (exec health checks, release activation
//! hooks) start with no capabilities at all.
//!
//! ballastd holds CAP_NET_ADMIN and CAP_NET_RAW: the systemd units give them as ambient
//! capabilities to the `ballast` user, and ambient capabilities pass through `execve` to
//! every child. `nft`, which the fence runs, must keep CAP_NET_ADMIN that way; a check or a
//! hook must not, or it could flush the VIP fence or add the VIP by itself. Between `fork`
//! and `execve` the child:
//! 1. clears its ambient set;
//! 2. empties its bounding set where it may (it holds CAP_SETPCAP when ballastd runs as
//!    root; under the units it does not, and the units bound it to the two anyway);
//! 3. sets no_new_privs, so that no setuid program and no file capability gives anything back
//!    (for root, `execve` would otherwise grant the bounding set again);
//! 4. sets its effective, permitted and inheritable sets to empty.
//!
//! The program then starts with CapInh, CapPrm, CapEff and CapAmb all zero, as root too
//! (`tests/capabilities.rs`). If any step fails the command is not started: the check fails,
//! the hook reports an error.

use std::os::unix::process::CommandExt;
use std::process::Command;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// prctl with every argument as the `unsigned long` the kernel reads.
unsafe fn prctl(option: libc::c_int, arg: libc::c_ulong) -> libc::c_int {
    let zero: libc::c_ulong = 0;
    libc::prctl(option, arg, zero, zero, zero)
}

/// Runs in the child between fork and exec: system calls only, no allocation.
fn drop_all_capabilities() -> std::io::Result<()> {
    let err = std::io::Error::last_os_error;
    // SAFETY: prctl and capset with the arguments their manuals give; they change only this
    // (single-threaded, about to exec) child.
    unsafe {
        // Kernels before 4.3 have no ambient set (EINVAL): nothing to clear.
        if prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        ) != 0
            && err().raw_os_error() != Some(libc::EINVAL)
        {
            return Err(err());
        }
        for cap in 0..64 {
            match prctl(libc::PR_CAPBSET_READ, cap) {
                r if r < 0 => break, // past the last capability this kernel knows
                0 => continue,
                _ => {}
            }
            if prctl(libc::PR_CAPBSET_DROP, cap) != 0 {
                if err().raw_os_error() == Some(libc::EPERM) {
                    break; // no CAP_SETPCAP: no_new_privs below stands in
                }
                return Err(err());
            }
        }
        if prctl(libc::PR_SET_NO_NEW_PRIVS, 1) != 0 {
            return Err(err());
        }
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let none = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capset, &header, none.as_ptr()) != 0 {
            return Err(err());
        }
    }
    Ok(())
}

/// `argv` (not empty) as a command that starts with no capabilities.
pub fn command(argv: &[String]) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    // SAFETY: drop_all_capabilities makes system calls only, which is what may run between
    // fork and exec.
    unsafe { c.pre_exec(drop_all_capabilities) };
    c
}
