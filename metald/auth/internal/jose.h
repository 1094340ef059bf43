#pragma once
// Private to metald/auth: the JOSE pieces the Authenticator is built from — strict base64url,
// verification keys bound to one algorithm (OpenSSL 3), and JWKS parsing.
//
// Why hand-rolled on OpenSSL rather than libjwt: libjwt 1.10 takes the algorithm from the token
// header and a key blob whose type it does not check against that algorithm, which is exactly the
// "algorithm swap" hole (HS256 keyed with an RSA public key). Here the algorithm is a property of
// the key, decided at configuration time, and the verifier for a key can only run that algorithm.
// The code is small (three primitives) and every input check is ours to test and fuzz.
//
// Thread-safety: VerifyKey is immutable after creation; Verify() is const and safe to call from
// many threads at once (OpenSSL 3 EVP_PKEY objects may be shared for read-only use).

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "metald/auth/authenticator.h"
#include "metald/base/status.h"

namespace metald::auth::internal {

// RFC 4648 §5 without padding. Strict: refuses '=', any byte outside the alphabet, a length of
// 1 mod 4, and non-zero unused trailing bits (so every byte string has exactly one encoding).
std::optional<std::string> Base64UrlDecode(std::string_view in);
std::string Base64UrlEncode(std::string_view in);

// A verification key bound to exactly one algorithm.
class VerifyKey {
 public:
  // Builds a key from a JwtKey (HS256 secret, or PEM public key for RS256 / ES256). Checks the key
  // type and size against the algorithm. invalid_argument on any mismatch.
  static base::Result<std::unique_ptr<VerifyKey>> FromConfig(const JwtKey& key);
  // Builds a key from one JWK object (JSON text of one element of "keys"). Returns nullptr (not
  // an error) for a key we deliberately skip: `use` other than "sig", or an `alg` / `kty` we do
  // not verify. invalid_argument for a malformed key of a supported type.
  static base::Result<std::unique_ptr<VerifyKey>> FromJwk(std::string_view jwk_json);

  ~VerifyKey();
  VerifyKey(const VerifyKey&) = delete;
  VerifyKey& operator=(const VerifyKey&) = delete;

  const std::string& kid() const { return kid_; }
  JwtAlgorithm algorithm() const { return algorithm_; }

  // True when `signature` is a valid signature of `signing_input` under this key with this key's
  // algorithm. Constant-time comparison for HS256. Never throws.
  bool Verify(std::string_view signing_input, std::string_view signature) const;

 private:
  struct Material;
  VerifyKey(std::string kid, JwtAlgorithm algorithm, std::unique_ptr<Material> material);

  // Constant after construction.
  std::string kid_;
  JwtAlgorithm algorithm_;
  std::unique_ptr<Material> material_;
};

// Parses a JWKS document ({"keys":[...]}). Skipped keys (see FromJwk) are left out. Errors name
// the index of the bad key.
base::Result<std::vector<std::unique_ptr<VerifyKey>>> ParseJwks(std::string_view jwks_json);

}  // namespace metald::auth::internal
