#include "metald/auth/authenticator.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <utility>

#include "metald/auth/internal/jose.h"

namespace metald::auth {
namespace {

using base::Result;
using base::Status;
using base::UnauthenticatedError;
using internal::VerifyKey;
using Json = nlohmann::json;

constexpr std::string_view kDevTokenPrefix = "dev_customer_";
// Far above any real token (a JWT with an 8192-bit RSA signature and generous claims stays under
// 4 KiB); bounds the work an unauthenticated caller can cause.
constexpr size_t kMaxTokenBytes = 16 * 1024;
constexpr size_t kMaxJwksBytes = 1 << 20;
constexpr std::chrono::seconds kMaxLeeway{600};

bool IsSpace(char c) { return c == ' ' || c == '\t'; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) {
             return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
           };
           return lower(x) == lower(y);
         });
}

// Token-supplied names are echoed only when they are short and plainly alphanumeric, so a
// message can never carry token bytes an attacker chose freely.
bool IsEchoableName(std::string_view s) {
  return !s.empty() && s.size() <= 16 && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
  });
}

std::optional<Json> DecodeJsonObject(std::string_view b64) {
  std::optional<std::string> text = internal::Base64UrlDecode(b64);
  if (!text) return std::nullopt;
  Json j = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  return j;
}

std::string KeyLabel(const VerifyKey& key) { return key.kid().empty() ? "(no kid)" : key.kid(); }

Result<std::string> ReadJwksFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    std::string msg = "Cannot read JWKS file " + path + ": " + std::strerror(err);
    if (err == ENOENT) return base::NotFoundError(std::move(msg));
    return base::FailedPreconditionError(std::move(msg));
  }
  std::string data;
  char buf[8192];
  while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
    data.append(buf, static_cast<size_t>(in.gcount()));
    if (data.size() > kMaxJwksBytes) {
      return base::InvalidArgumentError("JWKS file " + path + " is larger than 1 MiB");
    }
  }
  if (in.bad()) return base::FailedPreconditionError("Cannot read JWKS file " + path);
  return data;
}

}  // namespace

std::string_view JwtAlgorithmName(JwtAlgorithm alg) {
  switch (alg) {
    case JwtAlgorithm::kHS256:
      return "HS256";
    case JwtAlgorithm::kRS256:
      return "RS256";
    case JwtAlgorithm::kES256:
      return "ES256";
  }
  return "unknown";
}

std::optional<JwtAlgorithm> JwtAlgorithmFromName(std::string_view name) {
  if (name == "HS256") return JwtAlgorithm::kHS256;
  if (name == "RS256") return JwtAlgorithm::kRS256;
  if (name == "ES256") return JwtAlgorithm::kES256;
  return std::nullopt;
}

bool IsValidCustomerId(std::string_view id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

bool MayAccess(const Principal& principal, std::string_view owner_customer_id) {
  return IsValidCustomerId(owner_customer_id) && principal.customer_id == owner_customer_id;
}

// Invariants: every key in `keys` passed VerifyKey validation; non-empty kids are unique.
struct Authenticator::Impl {
  AuthOptions options;  // `keys` and `jwks_file` are consumed into `keys` below.
  std::vector<std::unique_ptr<VerifyKey>> keys;

  Result<Principal> VerifyJwt(std::string_view token) const;
  Status CheckClaims(const Json& claims) const;
  std::chrono::system_clock::time_point Now() const {
    return options.clock ? options.clock() : std::chrono::system_clock::now();
  }
};

Authenticator::Authenticator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Authenticator::~Authenticator() = default;

size_t Authenticator::key_count() const { return impl_->keys.size(); }

Result<std::unique_ptr<Authenticator>> Authenticator::Create(AuthOptions options) {
  auto impl = std::make_unique<Impl>();
  if (options.customer_claim.empty()) {
    return base::InvalidArgumentError("customer_claim must not be empty");
  }
  if (options.leeway < std::chrono::seconds(0) || options.leeway > kMaxLeeway) {
    return base::InvalidArgumentError("leeway must be within [0, 600] seconds");
  }
  if (options.issuer && options.issuer->empty()) {
    return base::InvalidArgumentError("issuer must not be empty when set");
  }
  if (options.audience && options.audience->empty()) {
    return base::InvalidArgumentError("audience must not be empty when set");
  }
  for (const JwtKey& key : options.keys) {
    ASSIGN_OR_RETURN(std::unique_ptr<VerifyKey> vk, VerifyKey::FromConfig(key));
    impl->keys.push_back(std::move(vk));
  }
  if (!options.jwks_file.empty()) {
    ASSIGN_OR_RETURN(std::string text, ReadJwksFile(options.jwks_file));
    Result<std::vector<std::unique_ptr<VerifyKey>>> jwks = internal::ParseJwks(text);
    if (!jwks.ok()) return jwks.status().WithContext("JWKS file " + options.jwks_file);
    if (jwks->empty()) {
      return base::InvalidArgumentError("JWKS file " + options.jwks_file +
                                        " has no usable signing key");
    }
    for (auto& key : *jwks) impl->keys.push_back(std::move(key));
  }
  std::set<std::string> kids;
  for (const auto& key : impl->keys) {
    if (!key->kid().empty() && !kids.insert(key->kid()).second) {
      return base::InvalidArgumentError("Key id '" + key->kid() + "' is configured twice");
    }
  }
  // Secrets now live only in the VerifyKeys; drop the option copies.
  options.keys.clear();
  impl->options = std::move(options);
  return std::unique_ptr<Authenticator>(new Authenticator(std::move(impl)));
}

Result<Principal> Authenticator::Authenticate(std::string_view authorization) const {
  while (!authorization.empty() && IsSpace(authorization.front())) authorization.remove_prefix(1);
  while (!authorization.empty() && IsSpace(authorization.back())) authorization.remove_suffix(1);
  if (authorization.empty()) return UnauthenticatedError("Missing bearer token");

  const size_t space = authorization.find_first_of(" \t");
  const std::string_view scheme = authorization.substr(0, space);
  if (!EqualsIgnoreCase(scheme, "Bearer")) {
    return UnauthenticatedError("Authorization scheme is not Bearer");
  }
  std::string_view token =
      space == std::string_view::npos ? std::string_view() : authorization.substr(space);
  while (!token.empty() && IsSpace(token.front())) token.remove_prefix(1);
  if (token.empty()) return UnauthenticatedError("Missing bearer token");
  if (token.size() > kMaxTokenBytes) return UnauthenticatedError("Malformed token: too large");

  if (token.starts_with(kDevTokenPrefix)) {
    if (!impl_->options.allow_dev_tokens) {
      return UnauthenticatedError("Development tokens are disabled");
    }
    std::string_view id = token.substr(kDevTokenPrefix.size());
    if (!IsValidCustomerId(id)) {
      return UnauthenticatedError("Development token has an invalid customer id");
    }
    Principal p;
    p.customer_id = std::string(id);
    p.subject = std::string(token);
    p.kind = Principal::Kind::kDevToken;
    return p;
  }
  return impl_->VerifyJwt(token);
}

Result<Principal> Authenticator::Impl::VerifyJwt(std::string_view token) const {
  const size_t dot1 = token.find('.');
  const size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return UnauthenticatedError("Malformed token");
  }
  const std::string_view header_b64 = token.substr(0, dot1);
  const std::string_view payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  const std::string_view signature_b64 = token.substr(dot2 + 1);
  const std::string_view signing_input = token.substr(0, dot2);

  std::optional<Json> header = DecodeJsonObject(header_b64);
  if (!header) return UnauthenticatedError("Malformed token: header is not base64url JSON");
  auto alg_it = header->find("alg");
  if (alg_it == header->end() || !alg_it->is_string()) {
    return UnauthenticatedError("Malformed token: header has no alg");
  }
  const std::string& alg_name = alg_it->get_ref<const std::string&>();
  if (EqualsIgnoreCase(alg_name, "none")) {
    return UnauthenticatedError("Token algorithm none is not accepted");
  }
  std::optional<JwtAlgorithm> alg = JwtAlgorithmFromName(alg_name);
  if (!alg) {
    return UnauthenticatedError(IsEchoableName(alg_name)
                                    ? "Token algorithm " + alg_name + " is not supported"
                                    : std::string("Token algorithm is not supported"));
  }
  // We implement no JWS extensions, so any critical one must be refused (RFC 7515 §4.1.11).
  if (header->contains("crit")) {
    return UnauthenticatedError("Token has unsupported critical header parameters");
  }
  if (keys.empty()) return UnauthenticatedError("JWT authentication is not configured");

  // Key selection. The algorithm is the key's, never the token's: a token naming another
  // algorithm than its key's is refused before any cryptography runs.
  std::vector<const VerifyKey*> candidates;
  const std::string alg_str(JwtAlgorithmName(*alg));
  if (auto kid_it = header->find("kid"); kid_it != header->end()) {
    if (!kid_it->is_string()) return UnauthenticatedError("Malformed token: kid is not a string");
    const std::string& kid = kid_it->get_ref<const std::string&>();
    auto key = std::find_if(keys.begin(), keys.end(),
                            [&](const auto& k) { return !k->kid().empty() && k->kid() == kid; });
    if (key == keys.end()) return UnauthenticatedError("Token key id is unknown");
    if ((*key)->algorithm() != *alg) {
      return UnauthenticatedError("Token algorithm " + alg_str + " does not match key " +
                                  (*key)->kid() + " (" +
                                  std::string(JwtAlgorithmName((*key)->algorithm())) + ")");
    }
    candidates.push_back(key->get());
  } else {
    for (const auto& k : keys) {
      if (k->algorithm() == *alg) candidates.push_back(k.get());
    }
    if (candidates.empty()) {
      if (keys.size() == 1) {
        return UnauthenticatedError("Token algorithm " + alg_str + " does not match key " +
                                    KeyLabel(*keys[0]) + " (" +
                                    std::string(JwtAlgorithmName(keys[0]->algorithm())) + ")");
      }
      return UnauthenticatedError("Token algorithm " + alg_str + " matches no configured key");
    }
  }

  std::optional<std::string> signature = internal::Base64UrlDecode(signature_b64);
  if (!signature) return UnauthenticatedError("Malformed token: signature is not base64url");
  const bool verified = std::any_of(candidates.begin(), candidates.end(), [&](const VerifyKey* k) {
    return k->Verify(signing_input, *signature);
  });
  if (!verified) return UnauthenticatedError("Token signature invalid");

  // Claims are looked at only once the signature holds.
  std::optional<Json> claims = DecodeJsonObject(payload_b64);
  if (!claims) return UnauthenticatedError("Malformed token: payload is not base64url JSON");
  RETURN_IF_ERROR(CheckClaims(*claims));

  const std::string& claim = options.customer_claim;
  auto customer = claims->find(claim);
  if (customer == claims->end()) return UnauthenticatedError("Token has no " + claim + " claim");
  if (!customer->is_string() || !IsValidCustomerId(customer->get_ref<const std::string&>())) {
    return UnauthenticatedError("Token " + claim + " claim is not a valid customer id");
  }
  Principal p;
  p.kind = Principal::Kind::kJwt;
  p.customer_id = customer->get<std::string>();
  if (auto sub = claims->find("sub"); sub != claims->end() && sub->is_string()) {
    p.subject = sub->get<std::string>();
  }
  if (auto scope = claims->find("scope"); scope != claims->end() && scope->is_string()) {
    std::istringstream words(scope->get<std::string>());
    for (std::string w; words >> w;) p.scopes.push_back(std::move(w));
  }
  return p;
}

Status Authenticator::Impl::CheckClaims(const Json& claims) const {
  const double now = std::chrono::duration<double>(Now().time_since_epoch()).count();
  const double leeway = static_cast<double>(options.leeway.count());

  if (auto exp = claims.find("exp"); exp != claims.end()) {
    if (!exp->is_number()) return UnauthenticatedError("Malformed token: exp is not a number");
    if (now >= exp->get<double>() + leeway) return UnauthenticatedError("Token expired");
  } else if (options.require_expiry) {
    return UnauthenticatedError("Token has no exp claim");
  }
  if (auto nbf = claims.find("nbf"); nbf != claims.end()) {
    if (!nbf->is_number()) return UnauthenticatedError("Malformed token: nbf is not a number");
    if (now < nbf->get<double>() - leeway) return UnauthenticatedError("Token not yet valid");
  }
  if (options.issuer) {
    auto iss = claims.find("iss");
    if (iss == claims.end() || !iss->is_string() || *iss != *options.issuer) {
      return UnauthenticatedError("Token issuer mismatch");
    }
  }
  if (options.audience) {
    auto aud = claims.find("aud");
    bool match = false;
    if (aud != claims.end() && aud->is_string()) {
      match = *aud == *options.audience;
    } else if (aud != claims.end() && aud->is_array()) {
      match = std::any_of(aud->begin(), aud->end(),
                          [&](const Json& a) { return a.is_string() && a == *options.audience; });
    }
    if (!match) return UnauthenticatedError("Token audience mismatch");
  }
  return base::OkStatus();
}

}  // namespace metald::auth
