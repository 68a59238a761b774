//! Checks of a command line's definition, shared by `ballastctl` and `ballastd` tests.

/// Every flag (`--name`) of `cmd` and its subcommands, at any depth, that has no help text,
/// written as `PATH SUBCOMMAND... --name` (`path` names `cmd`). Clap's own `--help` and
/// `--version` are not counted.
pub fn flags_without_help(cmd: &clap::Command, path: &str) -> Vec<String> {
    let mut missing: Vec<String> = cmd
        .get_arguments()
        .filter(|a| {
            let id = a.get_id().as_str();
            a.get_long().is_some() && a.get_help().is_none() && id != "help" && id != "version"
        })
        .map(|a| format!("{path} --{}", a.get_long().unwrap_or_default()))
        .collect();
    for sub in cmd.get_subcommands() {
        missing.extend(flags_without_help(
            sub,
            &format!("{path} {}", sub.get_name()),
        ));
    }
    missing
}
