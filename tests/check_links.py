"""Every relative link in README.md and docs/*.md points at a file or folder inside the repository.
A link that leaves the repository (../shared/...) works only in one checkout layout, so it fails.
    python3 tests/check_links.py REPO_ROOT"""
import os
import re
import sys


def main(root):
    root = os.path.realpath(root)
    files = [os.path.join(root, "README.md")] + [
        os.path.join(root, "docs", f) for f in sorted(os.listdir(os.path.join(root, "docs"))) if f.endswith(".md")]
    bad = []
    for path in files:
        text = open(path, encoding="utf-8").read()
        # [text](target) links and images; in-page anchors and web addresses are not files.
        for m in re.finditer(r"\]\(([^)\s]+)\)", text):
            target = m.group(1).split("#", 1)[0]
            if not target or re.match(r"^[a-z]+:", target):
                continue
            resolved = os.path.realpath(os.path.join(os.path.dirname(path), target))
            line = text.count("\n", 0, m.start()) + 1
            where = f"{os.path.relpath(path, root)}:{line}: {m.group(1)}"
            if not (resolved == root or resolved.startswith(root + os.sep)):
                bad.append(f"{where} leaves the repository")
            elif not os.path.exists(resolved):
                bad.append(f"{where} does not exist")
        # Paths in backquotes that point outside the repository.
        for m in re.finditer(r"`(\.\./[^`\s]+)`", text):
            line = text.count("\n", 0, m.start()) + 1
            bad.append(f"{os.path.relpath(path, root)}:{line}: `{m.group(1)}` points outside the repository")
    for b in bad:
        print("broken link:", b)
    print(f"{len(files)} files checked, {len(bad)} broken links")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
