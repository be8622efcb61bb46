//! A template's files: reading a folder, writing one back, the path rule, the
//! limits and the content digest.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::TemplateError;
use crate::messages::env::TemplateFile;

/// At most this many files in a template.
pub const MAX_FILES: usize = 200;
/// At most this many bytes of file contents in a template, all files together.
pub const MAX_TOTAL_BYTES: u64 = 4 * 1024 * 1024;
/// At most this many bytes in one file path.
pub const MAX_PATH_BYTES: usize = 255;

/// Reads a template folder: every regular file under `path`, sorted by path,
/// with '/'-separated relative paths. `.git` folders are skipped. Symbolic links
/// and special files are refused (a template must be self-contained), and so is
/// a folder over the limits ([`MAX_FILES`], [`MAX_TOTAL_BYTES`], [`MAX_PATH_BYTES`]).
pub fn read_dir(path: &Path) -> Result<Vec<TemplateFile>, TemplateError> {
    let meta = fs::metadata(path).map_err(|e| io_error(path, "cannot read the folder", e))?;
    if !meta.is_dir() {
        return Err(TemplateError::new(
            path.display().to_string(),
            "not a folder: give the template's folder (the one holding metrom.toml)",
        ));
    }
    let mut walk = Walk {
        files: Vec::new(),
        total: 0,
    };
    walk.dir(path, "")?;
    let mut files = walk.files;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Writes template files into `dir` (for `template pull`). Every path is checked
/// first and nothing is written if one is refused. A folder that exists and is
/// not empty is refused unless `force`; with `force`, files are overwritten but a
/// symbolic link on the way is still refused, so nothing lands outside `dir`.
pub fn write_dir(files: &[TemplateFile], dir: &Path, force: bool) -> Result<(), TemplateError> {
    check_files(files)?;
    let shown = dir.display().to_string();
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() && !force {
                return Err(TemplateError::new(
                    shown,
                    "the folder is not empty: choose an empty or new folder, or overwrite with \
                        --force",
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| io_error(dir, "cannot create the folder", e))?;
        }
        Err(e) => return Err(io_error(dir, "cannot read the folder", e)),
    }
    for file in files {
        let target = dir.join(&file.path);
        refuse_links_on_the_way(dir, &file.path)?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| io_error(parent, "cannot create", e))?;
        }
        let mut out =
            fs::File::create(&target).map_err(|e| io_error(&target, "cannot write", e))?;
        out.write_all(&file.contents)
            .map_err(|e| io_error(&target, "cannot write", e))?;
    }
    Ok(())
}

/// The content digest of a template version: `sha256:<64 hex>`.
///
/// It covers paths and contents only, in a canonical encoding — the files
/// sorted by path, then for each the path's length (u64, big-endian), the path,
/// the contents' length and the contents — so it does not depend on the order
/// of `files`, on timestamps or on permissions.
pub fn digest(files: &[TemplateFile]) -> String {
    let mut sorted: Vec<&TemplateFile> = files.iter().collect();
    sorted.sort_by(|a, b| (&a.path, &a.contents).cmp(&(&b.path, &b.contents)));
    let mut h = Sha256::new();
    h.update(b"metrom-template-v1\0");
    h.update((sorted.len() as u64).to_be_bytes());
    for f in sorted {
        h.update((f.path.len() as u64).to_be_bytes());
        h.update(f.path.as_bytes());
        h.update((f.contents.len() as u64).to_be_bytes());
        h.update(&f.contents);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Checks a file path of a template: relative, '/'-separated, no empty, `.` or
/// `..` component, no control characters, at most [`MAX_PATH_BYTES`] bytes — so
/// it cannot escape the template folder wherever it is written.
pub fn check_file_path(path: &str) -> Result<(), TemplateError> {
    let refuse = |why: &str| {
        Err(TemplateError::new(
            path,
            format!(
                "{why}: a template file path must stay inside the template folder \
                 (relative, '/'-separated, without '.' or '..')"
            ),
        ))
    };
    if path.is_empty() {
        return refuse("empty path");
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(TemplateError::new(
            path,
            format!(
                "path is {} bytes long; the limit is {MAX_PATH_BYTES}: shorten it",
                path.len()
            ),
        ));
    }
    // `C:/x` is absolute on Windows; `a:b` is a plain name.
    let b = path.as_bytes();
    let drive = b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'/';
    if path.starts_with('/') || path.starts_with('\\') || drive {
        return refuse("absolute path");
    }
    if path.contains('\\') {
        return refuse("backslash in path");
    }
    if path.chars().any(char::is_control) {
        return refuse("control character in path");
    }
    for part in path.split('/') {
        match part {
            "" => return refuse("empty path component"),
            "." => return refuse("'.' component"),
            ".." => return refuse("path escapes the template folder"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a whole set of files: limits, each path, no path twice, and no file
/// that is also a folder of another (`a` and `a/b`).
pub(crate) fn check_files(files: &[TemplateFile]) -> Result<(), TemplateError> {
    if files.len() > MAX_FILES {
        return Err(too_many_files(files.len()));
    }
    let total: u64 = files.iter().map(|f| f.contents.len() as u64).sum();
    if total > MAX_TOTAL_BYTES {
        return Err(too_large(total));
    }
    let mut seen = BTreeSet::new();
    for f in files {
        check_file_path(&f.path)?;
        if !seen.insert(f.path.as_str()) {
            return Err(TemplateError::new(&f.path, "listed twice in the template"));
        }
    }
    for f in files {
        for (i, _) in f.path.match_indices('/') {
            if seen.contains(&f.path[..i]) {
                return Err(TemplateError::new(
                    &f.path[..i],
                    format!("is a file and also the folder of '{}'", f.path),
                ));
            }
        }
    }
    Ok(())
}

/// Resolves `rel` (as written in a file at folder `base`, "" for the template's
/// root) to a template path, normalising `.` and `..`. Fails when the result
/// would leave the template folder or `rel` is absolute.
pub(crate) fn resolve_relative(base: &str, rel: &str) -> Result<String, &'static str> {
    if rel.starts_with('/') {
        return Err("an absolute path is outside the template folder");
    }
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err("the path escapes the template folder");
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

struct Walk {
    files: Vec<TemplateFile>,
    total: u64,
}

impl Walk {
    fn dir(&mut self, dir: &Path, prefix: &str) -> Result<(), TemplateError> {
        let entries = fs::read_dir(dir).map_err(|e| io_error(dir, "cannot read the folder", e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(dir, "cannot read the folder", e))?;
            names.push(entry.file_name());
        }
        names.sort();
        for name in names {
            let Some(name) = name.to_str().map(str::to_string) else {
                return Err(TemplateError::new(
                    format!("{prefix}{}", name.to_string_lossy()),
                    "the file name is not UTF-8: rename it",
                ));
            };
            let rel = format!("{prefix}{name}");
            let full = dir.join(&name);
            let meta =
                fs::symlink_metadata(&full).map_err(|e| io_error(&full, "cannot read", e))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                if name != ".git" {
                    self.dir(&full, &format!("{rel}/"))?;
                }
            } else if kind.is_symlink() {
                return Err(TemplateError::new(
                    rel,
                    "is a symbolic link: templates must be self-contained; copy the file into \
                        the folder",
                ));
            } else if !kind.is_file() {
                return Err(TemplateError::new(
                    rel,
                    "is not a regular file (a device, socket or pipe): templates must be \
                     self-contained; remove it",
                ));
            } else {
                self.file(rel, &full, meta.len())?;
            }
        }
        Ok(())
    }

    fn file(&mut self, rel: String, full: &Path, len: u64) -> Result<(), TemplateError> {
        check_file_path(&rel)?;
        if self.files.len() == MAX_FILES {
            return Err(too_many_files(self.files.len() + 1));
        }
        self.total += len;
        if self.total > MAX_TOTAL_BYTES {
            return Err(too_large(self.total));
        }
        let contents = fs::read(full).map_err(|e| io_error(full, "cannot read", e))?;
        // The file may have grown since it was measured.
        self.total += (contents.len() as u64).saturating_sub(len);
        if self.total > MAX_TOTAL_BYTES {
            return Err(too_large(self.total));
        }
        self.files.push(TemplateFile {
            path: rel,
            contents,
        });
        Ok(())
    }
}

/// Refuses to write `rel` under `dir` when a component on the way, or the file
/// itself, is a symbolic link that could lead outside `dir`.
fn refuse_links_on_the_way(dir: &Path, rel: &str) -> Result<(), TemplateError> {
    let mut at = PathBuf::from(dir);
    for part in Path::new(rel).components() {
        let Component::Normal(part) = part else {
            return check_file_path(rel);
        };
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(TemplateError::new(
                    at.display().to_string(),
                    format!(
                        "is a symbolic link: writing '{rel}' through it could leave the folder; \
                         remove it or choose another folder"
                    ),
                ));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

fn too_many_files(n: usize) -> TemplateError {
    TemplateError::new(
        "",
        format!(
            "the template has {n} files; the limit is {MAX_FILES}: keep large or generated \
             files out of the template folder"
        ),
    )
}

fn too_large(total: u64) -> TemplateError {
    TemplateError::new(
        "",
        format!(
            "the template's files add up to more than {} bytes (at least {total}); the limit is \
             4 MiB: keep data and build outputs out of the template folder",
            MAX_TOTAL_BYTES
        ),
    )
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> TemplateError {
    TemplateError::new(path.display().to_string(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, contents: &str) -> TemplateFile {
        TemplateFile {
            path: path.into(),
            contents: contents.as_bytes().to_vec(),
        }
    }

    #[test]
    fn reads_a_folder_sorted_without_git() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("conf/nginx")).unwrap();
        fs::create_dir_all(dir.path().join(".git/objects")).unwrap();
        fs::write(dir.path().join(".git/HEAD"), "ref").unwrap();
        fs::write(dir.path().join("metrom.toml"), "name = 'x'").unwrap();
        fs::write(dir.path().join("conf/nginx/site.conf"), "server {}").unwrap();
        fs::write(dir.path().join("compose.yaml"), "services: {}").unwrap();
        fs::write(dir.path().join(".env"), "A=1").unwrap();
        let files = read_dir(dir.path()).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                ".env",
                "compose.yaml",
                "conf/nginx/site.conf",
                "metrom.toml"
            ]
        );
        assert_eq!(files[2].contents, b"server {}");
    }

    #[test]
    fn refuses_symlinks_and_special_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("metrom.toml"), "").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
        let e = read_dir(dir.path()).unwrap_err();
        assert_eq!(e.file, "passwd");
        assert!(
            e.to_string()
                .contains("symbolic link: templates must be self-contained")
        );

        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status();
        if status.map(|s| s.success()).unwrap_or(false) {
            let e = read_dir(dir.path()).unwrap_err();
            assert_eq!(e.to_string(), format!("pipe: {}", e.message));
            assert!(e.message.contains("not a regular file"), "{e}");
        }
    }

    #[test]
    fn refuses_too_many_or_too_large_files() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..=MAX_FILES {
            fs::write(dir.path().join(format!("f{i:03}")), "x").unwrap();
        }
        let e = read_dir(dir.path()).unwrap_err();
        assert!(e.message.contains("the limit is 200"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), vec![0u8; 3 << 20]).unwrap();
        fs::write(dir.path().join("b"), vec![0u8; 2 << 20]).unwrap();
        let e = read_dir(dir.path()).unwrap_err();
        assert!(e.message.contains("the limit is 4 MiB"), "{e}");

        let many: Vec<TemplateFile> = (0..=MAX_FILES)
            .map(|i| file(&format!("f{i}"), ""))
            .collect();
        assert!(
            check_files(&many)
                .unwrap_err()
                .message
                .contains("201 files")
        );
    }

    #[test]
    fn file_paths_stay_inside_the_folder() {
        for ok in [
            "metrom.toml",
            "conf/nginx.conf",
            ".env",
            "a/.hidden/b",
            "x..y",
        ] {
            check_file_path(ok).unwrap();
        }
        for (bad, why) in [
            ("../x", "escapes the template folder"),
            ("a/../../x", "escapes the template folder"),
            ("/etc/passwd", "absolute path"),
            ("C:/x", "absolute path"),
            ("a\\b", "backslash"),
            ("a//b", "empty path component"),
            ("./a", "'.' component"),
            ("a/", "empty path component"),
            ("", "empty path"),
            ("a\nb", "control character"),
        ] {
            let e = check_file_path(bad).unwrap_err();
            assert!(e.message.contains(why), "{bad:?}: {e}");
            assert_eq!(e.file, bad);
        }
        let long = "a/".repeat(128) + "b";
        assert!(
            check_file_path(&long)
                .unwrap_err()
                .message
                .contains("the limit is 255")
        );
    }

    #[test]
    fn a_file_set_has_unique_paths_and_no_file_folder_clash() {
        let e = check_files(&[file("a", ""), file("a", "")]).unwrap_err();
        assert_eq!(e.to_string(), "a: listed twice in the template");
        let e = check_files(&[file("conf", ""), file("conf/x", "")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "conf: is a file and also the folder of 'conf/x'"
        );
    }

    #[test]
    fn digest_ignores_order_and_sees_every_byte() {
        let a = vec![
            file("metrom.toml", "name = 'x'"),
            file("compose.yaml", "services: {}"),
        ];
        let mut b = a.clone();
        b.reverse();
        let d = digest(&a);
        assert_eq!(d, digest(&b));
        assert!(d.starts_with("sha256:") && d.len() == 7 + 64, "{d}");
        let mut c = a.clone();
        c[1].contents[0] ^= 1;
        assert_ne!(d, digest(&c));
        let mut renamed = a.clone();
        renamed[1].path = "compose.yml".into();
        assert_ne!(d, digest(&renamed));
        // Moving a byte from a path into contents changes the digest (length prefixes).
        assert_ne!(digest(&[file("ab", "c")]), digest(&[file("a", "bc")]));
    }

    #[test]
    fn writes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![
            file("compose.yaml", "services: {}"),
            file("conf/a.env", "A=1"),
        ];
        let out = dir.path().join("pulled");
        write_dir(&files, &out, false).unwrap();
        assert_eq!(read_dir(&out).unwrap(), files);

        let e = write_dir(&files, &out, false).unwrap_err();
        assert!(e.message.contains("not empty"), "{e}");
        write_dir(&files, &out, true).unwrap();
    }

    #[test]
    fn writing_refuses_escapes_before_writing_anything() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t");
        for bad in ["../evil", "/etc/evil", "a/../../evil"] {
            let files = vec![file("ok", "x"), file(bad, "x")];
            let e = write_dir(&files, &out, false).unwrap_err();
            assert_eq!(e.file, bad);
            assert!(!out.join("ok").exists());
        }
        // A symbolic link inside an existing folder cannot be used to escape it.
        let outside = dir.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::create_dir_all(&out).unwrap();
        std::os::unix::fs::symlink(&outside, out.join("conf")).unwrap();
        let e = write_dir(&[file("conf/x", "x")], &out, true).unwrap_err();
        assert!(e.message.contains("symbolic link"), "{e}");
        assert!(!outside.join("x").exists());
    }

    #[test]
    fn resolves_relative_references() {
        assert_eq!(resolve_relative("", "./conf/a.env").unwrap(), "conf/a.env");
        assert_eq!(
            resolve_relative("deploy", "../common.env").unwrap(),
            "common.env"
        );
        assert_eq!(resolve_relative("", ".").unwrap(), "");
        assert!(resolve_relative("", "../x").is_err());
        assert!(resolve_relative("", "/etc/passwd").is_err());
    }
}
