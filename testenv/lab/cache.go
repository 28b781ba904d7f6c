package lab

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// CacheDir returns where the lab keeps downloaded and built pieces:
// $HAMIRROR_LAB_CACHE, else /var/cache/hamirror-lab for root, else
// ~/.cache/hamirror-lab. The folder is created.
func CacheDir() (string, error) {
	dir := os.Getenv("HAMIRROR_LAB_CACHE")
	if dir == "" {
		if os.Geteuid() == 0 {
			dir = "/var/cache/hamirror-lab"
		} else {
			uc, err := os.UserCacheDir()
			if err != nil {
				return "", fmt.Errorf("no cache folder: set HAMIRROR_LAB_CACHE: %w", err)
			}
			dir = filepath.Join(uc, "hamirror-lab")
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("lab cache %s: %w", dir, err)
	}
	return dir, nil
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:6])
}

// copyFile copies src (following symlinks) to dst atomically.
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

func sinceHours(t time.Time) float64 { return time.Since(t).Hours() }
