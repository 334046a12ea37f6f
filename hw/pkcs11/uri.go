package pkcs11

import (
	"fmt"
	"net/url"
	"strings"
)

// KeyType is the curve of a token key.
type KeyType string

// Curves supported on tokens.
const (
	Secp256k1 KeyType = "secp256k1"
	P256      KeyType = "p256"
)

// DefaultObject is the key label used when the URI names no object.
const DefaultObject = "tributary"

// URI is the parsed form of an RFC 7512 PKCS#11 URI naming a key.
type URI struct {
	Token      string  // token label (path attribute "token")
	Serial     string  // token serial number ("serial"), optional
	Object     string  // key label ("object"); DefaultObject if absent
	ID         []byte  // key ID ("id"), optional
	ModulePath string  // PKCS#11 module to load ("module-path" query attribute)
	PINValue   string  // user PIN ("pin-value"), optional
	PINSource  string  // file holding the user PIN ("pin-source"; a path or file: URI), optional
	KeyType    KeyType // curve for new keys ("x-key-type": secp256k1 or p256); secp256k1 if absent
}

// ParseURI reads a PKCS#11 URI such as
//
//	pkcs11:token=gw;object=tributary?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/tributary/pin
//
// Path attributes are separated by ';', query attributes by '&', values are
// percent-encoded. Unknown standard attributes are rejected rather than
// silently ignored; attributes that select other object kinds are refused.
func ParseURI(s string) (URI, error) {
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return URI{}, fmt.Errorf("PKCS#11 URI %q: want the pkcs11 scheme", s)
	}
	path, query, _ := strings.Cut(rest, "?")
	u := URI{Object: DefaultObject, KeyType: Secp256k1}
	if err := eachAttr(path, ";", func(k, v string) error { return u.setPath(k, v) }); err != nil {
		return URI{}, fmt.Errorf("PKCS#11 URI %q: %w", s, err)
	}
	if err := eachAttr(query, "&", func(k, v string) error { return u.setQuery(k, v) }); err != nil {
		return URI{}, fmt.Errorf("PKCS#11 URI %q: %w", s, err)
	}
	if u.Token == "" && u.Serial == "" {
		return URI{}, fmt.Errorf("PKCS#11 URI %q: name the token with token= (its label) or serial=", s)
	}
	if u.ModulePath == "" {
		return URI{}, fmt.Errorf("PKCS#11 URI %q: module-path= is required", s)
	}
	if u.PINValue != "" && u.PINSource != "" {
		return URI{}, fmt.Errorf("PKCS#11 URI %q: give pin-value or pin-source, not both", s)
	}
	return u, nil
}

func eachAttr(s, sep string, set func(k, v string) error) error {
	if s == "" {
		return nil
	}
	seen := map[string]bool{}
	for attr := range strings.SplitSeq(s, sep) {
		k, raw, ok := strings.Cut(attr, "=")
		if !ok || k == "" {
			return fmt.Errorf("attribute %q is not name=value", attr)
		}
		if seen[k] {
			return fmt.Errorf("attribute %q given twice", k)
		}
		seen[k] = true
		v, err := url.PathUnescape(raw)
		if err != nil {
			return fmt.Errorf("attribute %s: %w", k, err)
		}
		if err := set(k, v); err != nil {
			return err
		}
	}
	return nil
}

func (u *URI) setPath(k, v string) error {
	switch k {
	case "token":
		u.Token = v
	case "serial":
		u.Serial = v
	case "object":
		u.Object = v
	case "id":
		u.ID = []byte(v)
	case "type":
		if v != "private" {
			return fmt.Errorf("type=%s: the key URI must name a private key", v)
		}
	case "manufacturer", "model", "library-manufacturer", "library-description", "library-version", "slot-description",
		"slot-manufacturer", "slot-id":
		return fmt.Errorf("attribute %s is not supported: select the token by token= or serial=", k)
	default:
		return fmt.Errorf("unknown path attribute %q", k)
	}
	return nil
}

func (u *URI) setQuery(k, v string) error {
	switch k {
	case "module-path":
		u.ModulePath = v
	case "pin-value":
		u.PINValue = v
	case "pin-source":
		u.PINSource = strings.TrimPrefix(v, "file:")
	case "x-key-type":
		switch KeyType(strings.ToLower(v)) {
		case Secp256k1, P256:
			u.KeyType = KeyType(strings.ToLower(v))
		default:
			return fmt.Errorf("x-key-type=%s: want secp256k1 or p256", v)
		}
	case "module-name":
		return fmt.Errorf("module-name is not supported: give module-path")
	default:
		return fmt.Errorf("unknown query attribute %q", k)
	}
	return nil
}
