package broker

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/BurntSushi/toml"
	"golang.org/x/crypto/bcrypt"
)

// Bcrypt cost bounds. A Raspberry Pi 4 needs roughly 80 ms per verification at cost 10 and
// doubles with each step, so costs above maxBcryptCost would stall every CONNECT for seconds.
const (
	defaultBcryptCost = 10
	maxBcryptCost     = 14
)

// HashPassword returns a bcrypt hash of pw suitable for the password_hash key of a users file.
func HashPassword(pw string) (string, error) {
	if pw == "" {
		return "", errors.New("hash password: empty password")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), defaultBcryptCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// user is one [[user]] entry of a users file.
type user struct {
	Name         string   `toml:"name"`
	PasswordHash string   `toml:"password_hash"`
	Publish      []string `toml:"publish"`   // topic filters the user may publish to
	Subscribe    []string `toml:"subscribe"` // topic filters the user may subscribe to
}

// users maps a user name to its entry. A nil users means authentication is off.
type users map[string]*user

// usersFile is the TOML document of a users file.
type usersFile struct {
	User []user `toml:"user"`
}

// loadUsers reads and validates the users file at path.
func loadUsers(path string) (users, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	return parseUsers(path, data)
}

// parseUsers decodes a users file strictly: unknown keys, duplicate names, malformed hashes and
// invalid topic filters are errors naming the file and line.
func parseUsers(name string, data []byte) (users, error) {
	var f usersFile
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&f)
	if err != nil {
		return nil, decodeError(name, err)
	}
	lines := scanKeyLines(data)
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		return nil, unknownKeyError(name, lines, undecoded[0])
	}
	if len(f.User) == 0 {
		return nil, fmt.Errorf("users file %s: no [[user]] entries", name)
	}
	us := make(users, len(f.User))
	for i := range f.User {
		u := &f.User[i]
		if err := u.validate(); err != nil {
			return nil, fmt.Errorf("users file %s: %w", lines.where(name, "user", i, err.key), err)
		}
		if _, dup := us[u.Name]; dup {
			return nil, fmt.Errorf("users file %s: user %q defined twice", lines.where(name, "user", i, "name"), u.Name)
		}
		us[u.Name] = u
	}
	return us, nil
}

// typeErrorRE matches BurntSushi/toml's decode (type mismatch) errors, which carry a line in
// their text only. For keys repeated across [[user]] entries toml reports the last one's line.
var typeErrorRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// decodeError reformats toml's errors as "users file NAME:LINE: message".
func decodeError(name string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("users file %s:%d: %s", name, pe.Position.Line, pe.Message)
	}
	if m := typeErrorRE.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("users file %s:%s: key %s: %s", name, m[1], m[2], m[3])
	}
	return fmt.Errorf("users file %s: %w", name, err)
}

func unknownKeyError(name string, lines keyLines, k toml.Key) error {
	table, key := "", k.String()
	if len(k) > 1 {
		table, key = strings.Join(k[:len(k)-1], "."), k[len(k)-1]
	}
	line := lines.firstLine(table, key)
	if line == 0 {
		line = lines.firstLine(k.String(), "") // an unknown [table]
	}
	where := name
	if line > 0 {
		where = fmt.Sprintf("%s:%d", name, line)
	}
	if table == "" {
		return fmt.Errorf("users file %s: unknown key %q", where, key)
	}
	return fmt.Errorf("users file %s: unknown key %q in [%s]", where, key, table)
}

// fieldError is a validation error for one key of a [[user]] entry.
type fieldError struct {
	key string // "" means the entry as a whole
	msg string
}

func (e *fieldError) Error() string { return e.msg }

func (u *user) validate() *fieldError {
	if u.Name == "" {
		return &fieldError{key: "", msg: "user without a name"}
	}
	if u.PasswordHash == "" {
		return &fieldError{msg: fmt.Sprintf("user %q: missing password_hash", u.Name)}
	}
	cost, err := bcrypt.Cost([]byte(u.PasswordHash))
	if err != nil {
		return &fieldError{key: "password_hash", msg: fmt.Sprintf("user %q: password_hash is not a bcrypt hash: %v", u.Name, err)}
	}
	if cost > maxBcryptCost {
		return &fieldError{key: "password_hash", msg: fmt.Sprintf("user %q: password_hash bcrypt cost %d is above %d (too slow per connection)", u.Name, cost, maxBcryptCost)}
	}
	for _, list := range []struct {
		key     string
		filters []string
	}{{"publish", u.Publish}, {"subscribe", u.Subscribe}} {
		for _, f := range list.filters {
			if err := validateFilter(f); err != nil {
				return &fieldError{key: list.key, msg: fmt.Sprintf("user %q: %s filter %q: %v", u.Name, list.key, f, err)}
			}
		}
	}
	return nil
}

// validateFilter checks MQTT topic filter syntax (MQTT 5 section 4.7).
func validateFilter(f string) error {
	if f == "" {
		return errors.New("empty filter")
	}
	if strings.ContainsRune(f, 0) {
		return errors.New("contains NUL")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return errors.New("'#' must be the last level")
		case l != "#" && l != "+" && strings.ContainsAny(l, "#+"):
			return errors.New("wildcards must occupy a whole level")
		}
	}
	return nil
}

// mayPublish reports whether u may publish to topic, for client id clientID.
func (u *user) mayPublish(topic, clientID string) bool {
	return anyCovers(u.Publish, topic, u.Name, clientID)
}

// maySubscribe reports whether u may subscribe to filter (or receive a message on a topic).
func (u *user) maySubscribe(filter, clientID string) bool {
	return anyCovers(u.Subscribe, filter, u.Name, clientID)
}

func anyCovers(patterns []string, filter, username, clientID string) bool {
	for _, p := range patterns {
		p, ok := substitute(p, username, clientID)
		if ok && covers(p, filter) {
			return true
		}
	}
	return false
}

// substitute replaces %u and %c in an ACL pattern. It refuses (ok=false) when the value would
// change the pattern's structure, e.g. a client id containing '/', '+' or '#'.
func substitute(pattern, username, clientID string) (string, bool) {
	if !strings.Contains(pattern, "%") {
		return pattern, true
	}
	for _, s := range []struct{ token, value string }{{"%u", username}, {"%c", clientID}} {
		if !strings.Contains(pattern, s.token) {
			continue
		}
		if s.value == "" || strings.ContainsAny(s.value, "/+#") {
			return "", false
		}
		pattern = strings.ReplaceAll(pattern, s.token, s.value)
	}
	return pattern, true
}

// covers reports whether every topic matched by filter is also matched by pattern. A topic name
// (no wildcards) is a filter matching only itself, so this also answers "does pattern match topic".
// Per MQTT 4.7.2, a pattern starting with a wildcard does not cover topics starting with '$'.
func covers(pattern, filter string) bool {
	if strings.HasPrefix(filter, "$") && (strings.HasPrefix(pattern, "+") || strings.HasPrefix(pattern, "#")) {
		return false
	}
	p, f := strings.Split(pattern, "/"), strings.Split(filter, "/")
	for i, pl := range p {
		if pl == "#" {
			return true
		}
		if i >= len(f) {
			return false
		}
		switch fl := f[i]; {
		case fl == "#":
			return false // the filter reaches deeper than a non-'#' pattern level allows
		case pl == "+":
			continue
		case fl == "+" || pl != fl:
			return false
		}
	}
	return len(p) == len(f)
}
