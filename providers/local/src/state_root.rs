//! Keeping a cluster's `stateDir` inside the provider's state directory, whatever path a tenant writes.

use std::path::{Component, Path, PathBuf};

/// `requested` if it is an absolute path inside `root` (`root` itself included), with no `..` and no symbolic
/// link among its existing parts that leads out of `root`; otherwise why not.
pub fn confine(root: &Path, requested: &Path) -> Result<PathBuf, String> {
    if !requested.is_absolute() {
        return Err("is not an absolute path".into());
    }
    if requested.components().any(|c| c == Component::ParentDir) {
        return Err("contains '..'".into());
    }
    if !requested.starts_with(root) {
        return Err("is outside the manager's state directory".into());
    }
    // A symbolic link inside the root may point anywhere: resolve the deepest part that exists and check again.
    let real_root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let mut existing = requested;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent,
            None => break,
        }
    }
    if let Ok(real) = existing.canonicalize()
        && existing.starts_with(root)
        && !real.starts_with(&real_root)
    {
        return Err(format!(
            "leads out of the manager's state directory through {}",
            existing.display()
        ));
    }
    Ok(requested.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_the_root_are_accepted() {
        let root = tempfile::tempdir().unwrap();
        let inside = root.path().join("team-a/fast");
        assert_eq!(confine(root.path(), &inside).unwrap(), inside);
        assert_eq!(confine(root.path(), root.path()).unwrap(), root.path());
    }

    #[test]
    fn paths_outside_the_root_are_refused() {
        let root = tempfile::tempdir().unwrap();
        for outside in ["/", "/etc", "/tmp", "relative/dir"] {
            assert!(
                confine(root.path(), Path::new(outside)).is_err(),
                "{outside} accepted"
            );
        }
        let sibling = root.path().with_file_name("not-the-root");
        assert!(confine(root.path(), &sibling).is_err());
        let climbing = root.path().join("a/../../etc");
        assert!(confine(root.path(), &climbing).unwrap_err().contains(".."));
    }

    #[test]
    fn a_symbolic_link_out_of_the_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join("link")).unwrap();
        let through = root.path().join("link/cluster");
        assert!(
            confine(root.path(), &through)
                .unwrap_err()
                .contains("leads out")
        );
    }
}
