package lab

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// KernelMeta is the apt meta package that names the current cloud kernel.
const KernelMeta = "linux-image-cloud-amd64"

// WantedModules are the kernel modules the lab loads in every VM (with
// their dependencies). Modules built into the kernel are skipped.
var WantedModules = []string{
	"virtio_pci", "virtio_net", "virtio_blk", "virtio_console",
	"nbd", "raid1", "dm-mirror",
}

// OptionalModules are loaded when the kernel package has them: DRBD and the
// kernel initiator for comparisons, the LIO iSCSI target (configfs,
// target_core_mod with its block and file backstores, iscsi_target_mod) and
// dm-delay for a second real array (lio.go).
var OptionalModules = []string{"drbd", "iscsi_tcp", "sd_mod",
	"configfs", "target_core_mod", "target_core_iblock", "target_core_file", "iscsi_target_mod", "dm_delay"}

// Kernel is an unpacked Debian kernel: vmlinuz and the lab's modules, in
// load order (dependencies first).
type Kernel struct {
	Package string   `json:"package"` // e.g. linux-image-6.1.0-56-cloud-amd64
	Release string   `json:"release"` // uname -r, e.g. 6.1.0-56-cloud-amd64
	Vmlinuz string   `json:"vmlinuz"`
	Modules []string `json:"modules"` // absolute paths of .ko files in load order
}

var dependsLine = regexp.MustCompile(`Depends:\s*(linux-image-[^\s]+)`)

// CurrentKernelPackage asks apt which versioned package the cloud kernel
// meta package depends on.
func CurrentKernelPackage(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", KernelMeta).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s: %w: %s", KernelMeta, err, bytes.TrimSpace(out))
	}
	m := dependsLine.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("apt-cache depends %s names no linux-image package (run apt-get update?): %s", KernelMeta, bytes.TrimSpace(out))
	}
	return string(m[1]), nil
}

// FetchKernel returns the cloud kernel unpacked under cache/kernel/PKG,
// downloading it with apt-get the first time. When apt cannot answer (no
// network) the newest kernel already in the cache is used.
func FetchKernel(ctx context.Context, cache string, logf func(string, ...any)) (*Kernel, error) {
	pkg, err := CurrentKernelPackage(ctx)
	if err != nil {
		if k := newestCachedKernel(cache); k != nil {
			logf("lab: %v; using cached %s", err, k.Package)
			return k, nil
		}
		return nil, err
	}
	dir := filepath.Join(cache, "kernel", pkg+"-"+modulesKey())
	if k, err := loadKernel(dir); err == nil {
		return k, nil
	}
	logf("lab: fetching %s with apt-get download (once; cached in %s)", pkg, dir)
	tmp, err := os.MkdirTemp(cache, "kernel-fetch-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	dl := exec.CommandContext(ctx, "apt-get", "download", pkg)
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("apt-get download %s: %w: %s", pkg, err, bytes.TrimSpace(out))
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return nil, fmt.Errorf("apt-get download %s left %d .deb files in %s", pkg, len(debs), tmp)
	}
	root := filepath.Join(tmp, "root")
	if out, err := exec.CommandContext(ctx, "dpkg", "-x", debs[0], root).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("dpkg -x %s: %w: %s", debs[0], err, bytes.TrimSpace(out))
	}
	k, err := unpackKernel(root, pkg, tmp)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(filepath.Join(tmp, "out"), dir); err != nil {
		if _, statErr := os.Stat(dir); statErr != nil { // else another run won the race
			return nil, fmt.Errorf("caching kernel: %w", err)
		}
	}
	logf("lab: kernel %s with %d modules cached", k.Release, len(k.Modules))
	return loadKernel(dir)
}

// modulesKey names the module selection, so changing it rebuilds the cache.
func modulesKey() string {
	return shortHash(strings.Join(WantedModules, ",") + "|" + strings.Join(OptionalModules, ","))
}

func loadKernel(dir string) (*Kernel, error) {
	b, err := os.ReadFile(filepath.Join(dir, "kernel.json"))
	if err != nil {
		return nil, err
	}
	var k Kernel
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("%s/kernel.json: %w", dir, err)
	}
	k.Vmlinuz = filepath.Join(dir, k.Vmlinuz)
	for i, m := range k.Modules {
		k.Modules[i] = filepath.Join(dir, m)
	}
	return &k, nil
}

func newestCachedKernel(cache string) *Kernel {
	dirs, _ := filepath.Glob(filepath.Join(cache, "kernel", "linux-image-*-"+modulesKey()))
	sort.Strings(dirs)
	for i := len(dirs) - 1; i >= 0; i-- {
		if k, err := loadKernel(dirs[i]); err == nil {
			return k
		}
	}
	return nil
}

// unpackKernel picks vmlinuz and the wanted modules (with dependencies)
// out of an extracted package in root and writes them with kernel.json
// into tmp/out.
func unpackKernel(root, pkg, tmp string) (*Kernel, error) {
	vms, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(vms) != 1 {
		return nil, fmt.Errorf("%s: expected one boot/vmlinuz-*, found %d", pkg, len(vms))
	}
	release := strings.TrimPrefix(filepath.Base(vms[0]), "vmlinuz-")
	modroot := filepath.Join(root, "lib", "modules", release)
	idx, err := indexModules(modroot)
	if err != nil {
		return nil, err
	}
	builtin := readBuiltin(filepath.Join(modroot, "modules.builtin"))
	order, err := resolveModules(idx, builtin, WantedModules, OptionalModules)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pkg, err)
	}
	out := filepath.Join(tmp, "out")
	if err := os.MkdirAll(filepath.Join(out, "modules"), 0o755); err != nil {
		return nil, err
	}
	k := &Kernel{Package: pkg, Release: release, Vmlinuz: "vmlinuz"}
	if err := copyFile(vms[0], filepath.Join(out, "vmlinuz"), 0o644); err != nil {
		return nil, err
	}
	for _, name := range order {
		rel := filepath.Join("modules", name+".ko")
		if err := copyFile(idx[name].path, filepath.Join(out, rel), 0o644); err != nil {
			return nil, err
		}
		k.Modules = append(k.Modules, rel)
	}
	b, _ := json.MarshalIndent(k, "", "  ")
	return k, os.WriteFile(filepath.Join(out, "kernel.json"), b, 0o644)
}

type module struct {
	path    string
	depends []string
}

// normMod spells a module name the way the kernel compares them.
func normMod(s string) string { return strings.ReplaceAll(s, "-", "_") }

// indexModules reads the name and dependencies of every .ko under dir from
// its .modinfo section.
func indexModules(dir string) (map[string]module, error) {
	idx := map[string]module{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".ko") {
			return nil
		}
		name, deps, err := modinfo(p)
		if err != nil {
			return err
		}
		if name == "" {
			name = strings.TrimSuffix(filepath.Base(p), ".ko")
		}
		idx[normMod(name)] = module{path: p, depends: deps}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("indexing modules in %s: %w", dir, err)
	}
	if len(idx) == 0 {
		return nil, fmt.Errorf("no uncompressed .ko modules in %s (compressed modules are not supported yet)", dir)
	}
	return idx, nil
}

// modinfo returns a module's name= and depends= from its .modinfo section.
func modinfo(path string) (name string, deps []string, err error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return "", nil, nil
	}
	b, err := s.Data()
	if err != nil {
		return "", nil, fmt.Errorf("%s .modinfo: %w", path, err)
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			name = v
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d != "" {
					deps = append(deps, normMod(d))
				}
			}
		}
	}
	return name, deps, nil
}

func readBuiltin(path string) map[string]bool {
	m := map[string]bool{}
	f, err := os.Open(path)
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m[normMod(strings.TrimSuffix(filepath.Base(sc.Text()), ".ko"))] = true
	}
	return m
}

// resolveModules returns the modules to load, dependencies first. A wanted
// module that is neither a module nor built in is an error; an optional one
// is dropped.
func resolveModules(idx map[string]module, builtin map[string]bool, wanted, optional []string) ([]string, error) {
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(string, []string) error
	visit = func(n string, path []string) error {
		switch state[n] {
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(path, n), " -> "))
		case 2:
			return nil
		}
		m, ok := idx[n]
		if !ok {
			if builtin[n] {
				state[n] = 2
				return nil
			}
			return fmt.Errorf("module %s (needed by %s) not found", n, strings.Join(path, " -> "))
		}
		state[n] = 1
		for _, d := range m.depends {
			if err := visit(d, append(path, n)); err != nil {
				return err
			}
		}
		state[n] = 2
		order = append(order, n)
		return nil
	}
	for _, w := range wanted {
		if err := visit(normMod(w), nil); err != nil {
			return nil, err
		}
	}
	for _, o := range optional {
		n := normMod(o)
		if _, ok := idx[n]; !ok {
			continue
		}
		if err := visit(n, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}
