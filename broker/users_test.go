package broker

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// testHash is a bcrypt hash (cost 4) of "pw".
var testHash = func() string {
	h, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	return string(h)
}()

func TestParseUsers(t *testing.T) {
	users, err := parseUsers("users.toml", []byte(fmt.Sprintf(`
# comment
[[user]]
name = "sensor-1"
password_hash = %q
publish = ["sensors/sensor-1/#", "clients/%%c"]
subscribe = [
  "alerts/#",   # trailing comment
  "cmd/%%u/+",
]

[[user]]
name = 'ops'
password_hash = '%s'
`, testHash, testHash)))
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 2 || users["ops"] == nil {
		t.Fatalf("users = %v", users)
	}
	u := users["sensor-1"]
	if strings.Join(u.Publish, ",") != "sensors/sensor-1/#,clients/%c" || strings.Join(u.Subscribe, ",") != "alerts/#,cmd/%u/+" {
		t.Errorf("sensor-1 = %+v", u)
	}
}

func TestParseUsersErrors(t *testing.T) {
	hash := testHash
	for _, tc := range []struct {
		name, body, want string
	}{
		{"unknown key in user",
			"[[user]]\nname = \"a\"\npassword_hash = \"" + hash + "\"\n\n[[user]]\nname = \"b\"\npasword = \"x\"\n",
			`users.toml:7: unknown key "pasword" in [user]`},
		{"unknown top-level key", "version = 1\n[[user]]\nname = \"a\"\npassword_hash = \"" + hash + "\"\n",
			`users.toml:1: unknown key "version"`},
		{"unknown table", "[[user]]\nname = \"a\"\npassword_hash = \"" + hash + "\"\n[group]\nx = 1\n",
			`users.toml:4: unknown key "group"`},
		{"bad hash", "[[user]]\nname = \"a\"\npassword_hash = \"" + hash + "\"\n[[user]]\nname = \"b\"\npassword_hash = \"plaintext\"\n",
			`users.toml:6: user "b": password_hash is not a bcrypt hash`},
		{"missing hash", "[[user]]\nname = \"a\"\n", `users.toml:1: user "a": missing password_hash`},
		{"missing name", "[[user]]\npassword_hash = \"" + hash + "\"\n", "users.toml:1: user without a name"},
		{"duplicate user", "[[user]]\nname = \"a\"\npassword_hash = \"" + hash + "\"\n[[user]]\nname = \"a\"\npassword_hash = \"" + hash + "\"\n",
			`users.toml:5: user "a" defined twice`},
		{"bad publish filter", "[[user]]\nname = \"a\"\npassword_hash = \"" + hash + "\"\npublish = [\"a/#/b\"]\n",
			`users.toml:4: user "a": publish filter "a/#/b": '#' must be the last level`},
		{"bad subscribe filter", "[[user]]\nname = \"a\"\npassword_hash = \"" + hash + "\"\nsubscribe = [\"a/b+\"]\n",
			`users.toml:4: user "a": subscribe filter "a/b+": wildcards must occupy a whole level`},
		{"wrong type", "[[user]]\nname = \"a\"\npassword_hash = \"" + hash + "\"\npublish = \"a/#\"\n", "users.toml:4:"},
		{"syntax error", "[[user]]\nname = \"a\n", "users.toml:2:"},
		{"no users", "# nobody\n", "no [[user]] entries"},
		{"cost too high", "[[user]]\nname = \"a\"\npassword_hash = \"$2a$15$" + hash[7:] + "\"\n", "cost 15 is above 14"},
		// Cost 31 takes days per CONNECT; it must be refused at load, naming file, line and user.
		{"cost 31", "[[user]]\nname = \"a\"\npassword_hash = \"" + hash + "\"\n[[user]]\nname = \"slow\"\npassword_hash = \"$2b$31$" + hash[7:] + "\"\n",
			`users.toml:6: user "slow": password_hash bcrypt cost 31 is above 14`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseUsers("users.toml", []byte(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestLoadUsersNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "u.toml")
	if err := os.WriteFile(path, []byte("[[user]]\nname = \"a\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadUsers(path)
	if err == nil || !strings.Contains(err.Error(), path+":1:") {
		t.Fatalf("error %v, want it to name %s:1", err, path)
	}
}

func TestHashPassword(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if err := bcrypt.CompareHashAndPassword([]byte(h), []byte("correct horse")); err != nil {
		t.Errorf("hash does not verify: %v", err)
	}
	if _, err := parseUsers("u.toml", []byte("[[user]]\nname = \"a\"\npassword_hash = \""+h+"\"\n")); err != nil {
		t.Errorf("HashPassword output rejected by the users file parser: %v", err)
	}
	if _, err := HashPassword(""); err == nil {
		t.Error("empty password accepted")
	}
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		pattern, filter string
		want            bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a/b/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+", "a/+", true},
		{"a/+", "a/#", false},
		{"a/#", "a", true}, // '#' also matches the parent level
		{"a/#", "a/b/c", true},
		{"a/#", "a/+/c", true},
		{"a/#", "a/#", true},
		{"a/b/#", "a/+/c", false},
		{"#", "anything/at/all", true},
		{"#", "$SYS/broker", false}, // MQTT 4.7.2
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"a/b", "a/+", false},
		{"+/+", "a/b", true},
		{"a//b", "a//b", true},
		{"a/+/b", "a//b", true},
	} {
		if got := covers(tc.pattern, tc.filter); got != tc.want {
			t.Errorf("covers(%q, %q) = %v, want %v", tc.pattern, tc.filter, got, tc.want)
		}
	}
}

func TestSubstitute(t *testing.T) {
	for _, tc := range []struct {
		pattern, user, client, want string
		ok                          bool
	}{
		{"s/%u/#", "sensor-1", "c1", "s/sensor-1/#", true},
		{"c/%c", "u", "dev-7", "c/dev-7", true},
		{"x/%u-%c", "u", "c", "x/u-c", true},
		{"s/%u/#", "evil/#", "c", "", false}, // would widen the pattern
		{"s/%u/#", "+", "c", "", false},
		{"c/%c", "u", "", "", false},
		{"plain/topic", "u", "c", "plain/topic", true},
	} {
		got, ok := substitute(tc.pattern, tc.user, tc.client)
		if got != tc.want || ok != tc.ok {
			t.Errorf("substitute(%q, %q, %q) = %q, %v; want %q, %v", tc.pattern, tc.user, tc.client, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzUsersFile checks that any users file is either refused with an error naming the file or
// yields well-formed users. testdata/fuzz holds a cost-31 hash, the input suspected of the
// reported stall: it is refused at load, so neither this target nor a CONNECT ever runs bcrypt
// at such a cost. (The reported "0/sec" windows were Go's minimizer shrinking new interesting
// inputs, up to -fuzzminimizetime each, whose execs are reported only when it returns.)
func FuzzUsersFile(f *testing.F) {
	f.Add([]byte("[[user]]\nname = \"a\"\npassword_hash = \"" + testHash + "\"\npublish = [\"s/%u/#\"]\nsubscribe = [\"#\"]\n"))
	f.Add([]byte("[[user]]\nname = \"b\"\npasword = \"x\"\n"))
	f.Add([]byte("x = \"\"\"\n[[user]]\nname = 1\n\"\"\"\n[t]\na = [\n [1],\n {b = 2},\n]\n"))
	f.Add([]byte("[[user]]\nname='a'\npassword_hash='$2a$10$x'\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		us, err := parseUsers("fuzz.toml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "users file fuzz.toml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if len(us) == 0 {
			t.Fatal("accepted a file without users")
		}
		for name, u := range us {
			if name == "" || name != u.Name {
				t.Fatalf("bad entry %q -> %+v", name, u)
			}
			// A cost above the bound would make every CONNECT of this user (and the fuzz
			// target, were it to verify) take minutes to days.
			if cost, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil || cost > maxBcryptCost {
				t.Fatalf("accepted hash %q: cost %d, %v", u.PasswordHash, cost, err)
			}
			for _, f := range append(append([]string(nil), u.Publish...), u.Subscribe...) {
				if validateFilter(f) != nil {
					t.Fatalf("accepted filter %q", f)
				}
			}
		}
	})
}
