package cluster

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hashicorp/memberlist"
)

// ErrNoKeyring is returned by ReloadKeyring when the peer was started without
// a keyring file: encryption cannot be switched on in a running cluster.
var ErrNoKeyring = errors.New("gossip encryption is not enabled")

// readKeyringFile reads a keyring file; see parseKeyring.
func readKeyringFile(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open keyring file: %w", err)
	}
	defer func() { _ = f.Close() }()
	keys, err := parseKeyring(f)
	if err != nil {
		return nil, fmt.Errorf("parse keyring file %s: %w", path, err)
	}
	return keys, nil
}

// parseKeyring reads one standard base64 key per line. Blank lines and lines
// whose first non-blank character is '#' are ignored. Every key must decode
// to 16, 24 or 32 bytes (AES-128, -192, -256). The first key is the primary
// (used to encrypt), the others are accepted for decryption. A key listed
// twice counts once, at its first position. Errors name the line, never the
// key.
func parseKeyring(r io.Reader) ([][]byte, error) {
	var keys [][]byte
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		key, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			return nil, fmt.Errorf("line %d: key is not valid base64", line)
		}
		if err := memberlist.ValidateKey(key); err != nil {
			return nil, fmt.Errorf("line %d: key decodes to %d bytes, want 16, 24 or 32", line, len(key))
		}
		if !containsKey(keys, key) {
			keys = append(keys, key)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read keys: %w", err)
	}
	if len(keys) == 0 {
		return nil, errors.New("no keys found")
	}
	return keys, nil
}

func containsKey(keys [][]byte, key []byte) bool {
	for _, k := range keys {
		if bytes.Equal(k, key) {
			return true
		}
	}
	return false
}

// keyringChange summarises what applyKeys did, for logs (never the keys).
type keyringChange struct {
	added, removed int
	primaryChanged bool
}

// applyKeys makes the installed keys of kr equal to keys with keys[0] as the
// primary, in the order that never leaves a moment without a usable primary:
// add the missing keys, switch the primary, then remove the keys no longer
// listed.
func applyKeys(kr *memberlist.Keyring, keys [][]byte) (keyringChange, error) {
	var c keyringChange
	installed := kr.GetKeys()
	for _, k := range keys {
		if containsKey(installed, k) {
			continue
		}
		if err := kr.AddKey(k); err != nil {
			return c, fmt.Errorf("add key: %w", err)
		}
		c.added++
	}
	if !bytes.Equal(kr.GetPrimaryKey(), keys[0]) {
		if err := kr.UseKey(keys[0]); err != nil {
			return c, fmt.Errorf("use primary key: %w", err)
		}
		c.primaryChanged = true
	}
	for _, k := range kr.GetKeys() {
		if containsKey(keys, k) {
			continue
		}
		if err := kr.RemoveKey(k); err != nil {
			return c, fmt.Errorf("remove key: %w", err)
		}
		c.removed++
	}
	return c, nil
}
