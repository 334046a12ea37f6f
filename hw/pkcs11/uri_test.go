package pkcs11

import (
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const mod = "module-path=/usr/lib/softhsm/libsofthsm2.so"

func TestParseURI(t *testing.T) {
	tests := []struct {
		uri     string
		want    URI
		wantErr string
	}{
		{uri: "pkcs11:token=gw?" + mod, want: URI{Token: "gw", Object: DefaultObject, KeyType: Secp256k1,
			ModulePath: "/usr/lib/softhsm/libsofthsm2.so"}},
		{uri: "pkcs11:token=my%20token;object=k1;id=%01%02;type=private?" + mod + "&pin-source=file:/etc/pin&x-key-type=P256",
			want: URI{Token: "my token", Object: "k1", ID: []byte{1, 2}, KeyType: P256,
				ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINSource: "/etc/pin"}},
		{uri: "pkcs11:serial=0123?" + mod + "&pin-value=5678", want: URI{Serial: "0123", Object: DefaultObject,
			KeyType: Secp256k1, ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINValue: "5678"}},
		{uri: "pkcs11:object=k?" + mod, wantErr: "name the token"},
		{uri: "pkcs11:token=gw", wantErr: "module-path"},
		{uri: "pkcs11:token=gw;type=cert?" + mod, wantErr: "private key"},
		{uri: "pkcs11:token=gw;slot-id=1?" + mod, wantErr: "not supported"},
		{uri: "pkcs11:token=gw;token=x?" + mod, wantErr: "twice"},
		{uri: "pkcs11:token=gw;colour=red?" + mod, wantErr: "unknown path attribute"},
		{uri: "pkcs11:token=gw?" + mod + "&x-key-type=ed25519", wantErr: "x-key-type"},
		{uri: "pkcs11:token=gw?" + mod + "&pin-value=1&pin-source=/p", wantErr: "not both"},
		{uri: "pkcs11:token=%zz?" + mod, wantErr: "invalid URL escape"},
		{uri: "pkcs11:token?" + mod, wantErr: "name=value"},
		{uri: "tpm:///dev/tpm0", wantErr: "want the pkcs11 scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			got, err := ParseURI(tt.uri)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseURI error = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseURI = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func FuzzParseURI(f *testing.F) {
	f.Add("pkcs11:token=gw;object=k;id=%01?" + mod + "&pin-value=1")
	f.Add("pkcs11:serial=1?" + mod + "&x-key-type=p256")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			return
		}
		if u.ModulePath == "" || (u.Token == "" && u.Serial == "") || (u.KeyType != Secp256k1 && u.KeyType != P256) {
			t.Fatalf("ParseURI(%q) accepted an incomplete URI: %+v", s, u)
		}
	})
}
