package lab

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

//go:embed init.sh
var initScript []byte

// profile is /etc/profile inside the VMs.
const profile = `export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PS1='\h:\w# '
export MDADM_NO_UDEV=1 DM_DISABLE_UDEV=1
`

// HostTools are host binaries copied into the initramfs with their shared
// libraries; busybox has no ext4 mkfs, mdadm or dmsetup.
var HostTools = []string{"mkfs.ext4", "e2fsck", "mdadm", "dmsetup", "blkid"}

// GoBinaries are the project's commands built statically into the image:
// package path → name in /usr/sbin.
var GoBinaries = [][2]string{
	{"./cmd/mirrord", "mirrord"},
	{"./cmd/mirrorctl", "mirrorctl"},
	{"./testenv/lab/labagent", "labagent"},
}

// Image is what a lab VM boots: a kernel and an initramfs.
type Image struct {
	Kernel    *Kernel
	Initramfs string
	Missing   []string // host tools not found, left out of the image
}

// BuildImage fetches the kernel (cached), builds the project's binaries
// and assembles the initramfs, cached under cache/initramfs by content.
func BuildImage(ctx context.Context, cache string, logf func(string, ...any)) (*Image, error) {
	k, err := FetchKernel(ctx, cache, logf)
	if err != nil {
		return nil, err
	}
	bins, binDir, err := buildGo(ctx, cache)
	if binDir != "" {
		defer os.RemoveAll(binDir) // the archive is written (or found) before this returns
	}
	if err != nil {
		return nil, err
	}
	a := newArchive()
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "mnt", "root", "etc/lab", "usr/bin", "sbin"} {
		a.dir(d)
	}
	a.add(cpioEntry{Name: "dev/console", Mode: cpioChr | 0o600, Major: 5, Min: 1})
	a.add(cpioEntry{Name: "dev/null", Mode: cpioChr | 0o666, Major: 1, Min: 3})
	a.data("init", initScript, 0o755)
	a.data("etc/profile", []byte(profile), 0o644)
	a.data("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	a.data("etc/group", []byte("root:x:0:\n"), 0o644)
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return nil, fmt.Errorf("busybox not installed (apt-get install busybox-static): %w", err)
	}
	if !isStatic(busybox) {
		return nil, fmt.Errorf("%s is dynamically linked: install busybox-static", busybox)
	}
	a.file("bin/busybox", busybox, 0o755)
	var mods []string
	for _, m := range k.Modules {
		name := strings.TrimSuffix(filepath.Base(m), ".ko")
		a.file("lib/modules/"+name+".ko", m, 0o644)
		mods = append(mods, name)
	}
	a.data("etc/lab/modules", []byte(strings.Join(mods, "\n")+"\n"), 0o644)
	for name, path := range bins {
		a.file("usr/sbin/"+name, path, 0o755)
	}
	img := &Image{Kernel: k}
	for _, tool := range HostTools {
		if err := addHostTool(ctx, a, tool); err != nil {
			logf("lab: leaving %s out of the VM image: %v", tool, err)
			img.Missing = append(img.Missing, tool)
		}
	}
	if _, err := os.Stat("/etc/mke2fs.conf"); err == nil {
		a.file("etc/mke2fs.conf", "/etc/mke2fs.conf", 0o644)
	}
	sum, err := a.hash(k.Package)
	if err != nil {
		return nil, err
	}
	img.Initramfs = filepath.Join(cache, "initramfs", sum+".cpio")
	if _, err := os.Stat(img.Initramfs); err == nil {
		return img, nil
	}
	if err := os.MkdirAll(filepath.Dir(img.Initramfs), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(img.Initramfs), "build-*.cpio")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if err := a.writeTo(tmp); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("writing initramfs: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	os.Chmod(tmp.Name(), 0o644)
	pruneOld(filepath.Dir(img.Initramfs), 6)
	return img, os.Rename(tmp.Name(), img.Initramfs)
}

// hash names the archive's content: every entry's name, mode and bytes.
func (a *archive) hash(salt string) (string, error) {
	h := sha256.New()
	io.WriteString(h, salt)
	for _, name := range a.names() {
		e := a.entries[name]
		fmt.Fprintf(h, "\x00%s\x00%o\x00%s\x00%d:%d\x00", name, e.Mode, e.Link, e.Major, e.Min)
		h.Write(e.Data)
		if e.Src != "" {
			f, err := os.Open(e.Src)
			if err != nil {
				return "", err
			}
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return "", err
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:12]), nil
}

// pruneOld keeps the newest keep files in dir.
func pruneOld(dir string, keep int) {
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) <= keep {
		return
	}
	type fi struct {
		name string
		mod  int64
	}
	var fs []fi
	for _, e := range ents {
		if info, err := e.Info(); err == nil {
			fs = append(fs, fi{e.Name(), info.ModTime().UnixNano()})
		}
	}
	for len(fs) > keep {
		oldest := 0
		for i := range fs {
			if fs[i].mod < fs[oldest].mod {
				oldest = i
			}
		}
		os.Remove(filepath.Join(dir, fs[oldest].name))
		fs = append(fs[:oldest], fs[oldest+1:]...)
	}
}

// ModuleRoot returns the folder of hamirror's go.mod, searching upwards
// from the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/hamirror/hamirror\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("not inside the hamirror source tree (no go.mod above the working directory)")
		}
		dir = parent
	}
}

// buildGo builds GoBinaries statically into a new folder under cache and
// returns name → path and the folder (the caller removes it).
func buildGo(ctx context.Context, cache string) (map[string]string, string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return nil, "", err
	}
	pruneBins(cache)
	out, err := os.MkdirTemp(cache, "bin-")
	if err != nil {
		return nil, "", err
	}
	res := map[string]string{}
	for _, b := range GoBinaries {
		dst := filepath.Join(out, b[1])
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", dst, b[0])
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if o, err := cmd.CombinedOutput(); err != nil {
			return nil, out, fmt.Errorf("go build %s: %w\n%s", b[0], err, o)
		}
		res[b[1]] = dst
	}
	return res, out, nil
}

// pruneBins removes build folders an interrupted run left behind (older
// than an hour, so a concurrent run's folder is kept).
func pruneBins(cache string) {
	dirs, _ := filepath.Glob(filepath.Join(cache, "bin-*"))
	for _, d := range dirs {
		if st, err := os.Stat(d); err == nil && sinceHours(st.ModTime()) > 1 {
			os.RemoveAll(d)
		}
	}
}

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/[^\s]+)\s+\(0x`)

// addHostTool adds the host binary tool and the shared libraries ldd
// lists for it, at the same paths, so it runs inside the VM.
func addHostTool(ctx context.Context, a *archive, tool string) error {
	path, err := exec.LookPath(tool)
	if err != nil {
		for _, d := range []string{"/usr/sbin", "/sbin"} {
			if _, serr := os.Stat(filepath.Join(d, tool)); serr == nil {
				path, err = filepath.Join(d, tool), nil
			}
		}
		if err != nil {
			return err
		}
	}
	a.file("usr/sbin/"+tool, path, 0o755)
	if isStatic(path) {
		return nil
	}
	out, err := exec.CommandContext(ctx, "ldd", path).Output()
	if err != nil {
		return fmt.Errorf("ldd %s: %w", path, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := lddLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		a.file(strings.TrimPrefix(m[1], "/"), m[1], 0o755)
	}
	return sc.Err()
}

// isStatic reports whether the ELF file at path has no interpreter.
func isStatic(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, 1<<16)
	n, _ := io.ReadFull(f, b)
	return !bytes.Contains(b[:n], []byte("/lib64/ld-linux"))
}
