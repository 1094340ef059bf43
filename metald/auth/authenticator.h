#pragma once
// metald/auth: turns the credentials of a request (the raw `Authorization` header value) into a
// Principal, and offers pure policy helpers ("may principal P act on a VM owned by C").
//
// Accepted credentials:
//   * `Bearer dev_customer_<id>`: development tokens, only when AuthOptions::allow_dev_tokens.
//   * `Bearer <JWT>`: compact JWS signed with HS256, RS256 or ES256. Every configured key is bound
//     to exactly one algorithm; the token's `alg` must equal the key's (no `none`, no algorithm
//     swap such as HS256 "signed" with an RSA public key).
//
// Concurrency: an Authenticator is immutable after Create() and every method is const, so one
// instance may be shared by any number of threads without locking. It does no I/O after Create()
// (the JWKS file is read once there).
//
// Errors: every rejected credential is `unauthenticated`, with a message naming the check that
// failed ("Token expired", "Token audience mismatch", ...). Messages never contain the token, a
// claim value taken from the token, or key material.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "metald/base/status.h"

namespace metald::auth {

// The signature algorithms we verify (RFC 7518 §3.1). `none` and everything else is refused.
enum class JwtAlgorithm {
  kHS256,  // HMAC SHA-256 with a shared secret.
  kRS256,  // RSASSA-PKCS1-v1_5 SHA-256 with an RSA public key (>= 2048 bits).
  kES256,  // ECDSA P-256 SHA-256 with an EC public key on P-256.
};

// "HS256", "RS256", "ES256".
std::string_view JwtAlgorithmName(JwtAlgorithm alg);
// Inverse of JwtAlgorithmName (exact, case-sensitive as in RFC 7515); nullopt otherwise.
std::optional<JwtAlgorithm> JwtAlgorithmFromName(std::string_view name);

// One verification key, bound to exactly one algorithm.
struct JwtKey {
  // Key id matched against the token header's `kid`: a token with `kid` is verified only by the
  // key of that id; a token without `kid` by any key of its algorithm. May be empty; a non-empty
  // kid is unique among all configured keys (inline and JWKS).
  std::string kid;
  JwtAlgorithm algorithm = JwtAlgorithm::kRS256;
  // HS256: the shared secret bytes (at least 32 bytes; a PEM text is refused so that a public key
  // can never be configured as an HMAC secret). RS256 / ES256: a PEM "PUBLIC KEY"
  // (SubjectPublicKeyInfo) of the matching type.
  std::string material;
};

// Configuration of an Authenticator. Every field is read once, by Authenticator::Create().
struct AuthOptions {
  // Accept `Bearer dev_customer_<id>` tokens (flag --dev-tokens, env
  // METALD_AUTH_DEV_TOKENS=true). Never enable in production: anyone can name any customer.
  // Default: false.
  bool allow_dev_tokens = false;

  // Inline verification keys. Default: none.
  std::vector<JwtKey> keys;

  // Path of a JWKS file ({"keys":[...]}, RFC 7517) whose signing keys are added to `keys`. Keys
  // with `use` other than "sig" or an algorithm other than HS256 / RS256 / ES256 are skipped; a
  // JWK without `alg` is bound by its type (RSA → RS256, EC P-256 → ES256, oct → HS256). Read
  // once at Create(); a malformed file or key fails Create(). Default: empty (no file).
  std::string jwks_file;

  // When set, a token's `iss` claim must equal it exactly. Default: unset (not checked).
  std::optional<std::string> issuer;

  // When set, a token's `aud` claim (string or array of strings) must contain it.
  // Default: unset (not checked).
  std::optional<std::string> audience;

  // The claim holding the customer id; its value must match [A-Za-z0-9_-]{1,64}.
  // Default: "customer_id".
  std::string customer_claim = "customer_id";

  // Reject JWTs without an `exp` claim. Default: true.
  bool require_expiry = true;

  // Clock skew allowed on `exp` and `nbf`: a token is expired once now >= exp + leeway and not
  // yet valid while now < nbf - leeway. Default: 30 s. Must be within [0, 10 min].
  std::chrono::seconds leeway{30};

  // Source of the current time, for tests. Default (empty): std::chrono::system_clock::now.
  // Must be thread-safe when the Authenticator is shared between threads.
  std::function<std::chrono::system_clock::time_point()> clock;
};

// Who made a request.
struct Principal {
  enum class Kind { kDevToken, kJwt };

  // The customer the request acts for; matches [A-Za-z0-9_-]{1,64}.
  std::string customer_id;
  // JWT `sub` (empty when absent); for development tokens, the token itself ("dev_customer_<id>").
  std::string subject;
  Kind kind = Kind::kJwt;
  // Space-separated `scope` claim split into words (empty when absent). Informational for now.
  std::vector<std::string> scopes;
};

// True when `id` matches [A-Za-z0-9_-]{1,64}.
bool IsValidCustomerId(std::string_view id);

// Policy: may `principal` act on a resource owned by `owner_customer_id`? True only when the
// owner is a valid customer id equal to the principal's. Pure function.
bool MayAccess(const Principal& principal, std::string_view owner_customer_id);

class Authenticator {
 public:
  // Validates `options` and loads every key (inline and from the JWKS file). Fails with
  // invalid_argument naming the bad field or key (never printing key material), or with
  // not_found / failed_precondition when the JWKS file cannot be read.
  static base::Result<std::unique_ptr<Authenticator>> Create(AuthOptions options);

  ~Authenticator();
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;

  // Authenticates `authorization` (the raw value of the `Authorization` header, e.g.
  // "Bearer eyJ..."; the scheme is case-insensitive). Returns the Principal, or `unauthenticated`
  // with a message naming the failed check. Thread-safe; does no I/O.
  base::Result<Principal> Authenticate(std::string_view authorization) const;

  // Number of verification keys loaded (inline plus JWKS). For diagnostics and tests.
  size_t key_count() const;

 private:
  struct Impl;
  explicit Authenticator(std::unique_ptr<Impl> impl);

  // Constant after construction.
  std::unique_ptr<const Impl> impl_;
};

}  // namespace metald::auth
