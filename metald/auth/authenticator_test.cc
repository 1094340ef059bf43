#include "metald/auth/authenticator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "metald/auth/internal/jose.h"
#include "metald/auth/testing/jwt_minter.h"

namespace metald::auth {
namespace {

using base::StatusCode;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing_util::Base64Url;
using testing_util::KeyPair;
using testing_util::MintJwt;
using testing_util::MintJwtRaw;
using Json = nlohmann::json;
using Clock = std::chrono::system_clock;

constexpr int64_t kNow = 1'700'000'000;
const std::string kSecret = "0123456789abcdef0123456789abcdef-hs256-test-secret";

Clock::time_point At(int64_t seconds) { return Clock::time_point(std::chrono::seconds(seconds)); }

Json Claims(std::string customer = "cust-1") {
  return {
      {"customer_id", std::move(customer)}, {"sub", "user-7"}, {"exp", kNow + 3600}, {"iat", kNow}};
}

class AuthenticatorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    rsa_ = new KeyPair(testing_util::GenerateRsaKeyPair(2048));
    rsa_other_ = new KeyPair(testing_util::GenerateRsaKeyPair(2048));
    ec_ = new KeyPair(testing_util::GenerateEcP256KeyPair());
    ec_other_ = new KeyPair(testing_util::GenerateEcP256KeyPair());
  }
  static void TearDownTestSuite() {
    delete rsa_;
    delete rsa_other_;
    delete ec_;
    delete ec_other_;
  }

  // Options with one key per algorithm and a clock reading `now_`.
  AuthOptions BaseOptions() {
    AuthOptions o;
    o.keys.push_back({"hs1", JwtAlgorithm::kHS256, kSecret});
    o.keys.push_back({"rsa1", JwtAlgorithm::kRS256, rsa_->public_pem});
    o.keys.push_back({"ec1", JwtAlgorithm::kES256, ec_->public_pem});
    o.clock = [this] { return At(now_.load()); };
    return o;
  }

  std::unique_ptr<Authenticator> Make(AuthOptions o) {
    auto a = Authenticator::Create(std::move(o));
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    return a.ok() ? *std::move(a) : nullptr;
  }

  // Asserts an unauthenticated result whose message contains `want` and none of the token.
  static void ExpectRejected(const base::Result<Principal>& r, const std::string& want,
                             const std::string& token = "") {
    ASSERT_FALSE(r.ok()) << "accepted, wanted: " << want;
    EXPECT_EQ(r.status().code(), StatusCode::kUnauthenticated) << r.status().ToString();
    EXPECT_THAT(r.status().message(), HasSubstr(want));
    if (token.size() > 8) {
      // No part of the token (header, payload or signature) is echoed back.
      size_t start = 0;
      while (start < token.size()) {
        size_t dot = token.find('.', start);
        if (dot == std::string::npos) dot = token.size();
        std::string part = token.substr(start, dot - start);
        if (part.size() >= 8) {
          EXPECT_THAT(r.status().message(), ::testing::Not(HasSubstr(part)));
        }
        start = dot + 1;
      }
    }
  }

  static KeyPair* rsa_;
  static KeyPair* rsa_other_;
  static KeyPair* ec_;
  static KeyPair* ec_other_;
  std::atomic<int64_t> now_{kNow};
};

KeyPair* AuthenticatorTest::rsa_ = nullptr;
KeyPair* AuthenticatorTest::rsa_other_ = nullptr;
KeyPair* AuthenticatorTest::ec_ = nullptr;
KeyPair* AuthenticatorTest::ec_other_ = nullptr;

std::string Bearer(const std::string& token) { return "Bearer " + token; }

// --- Authorization header and development tokens -------------------------------------------

TEST_F(AuthenticatorTest, MissingOrNonBearerHeaderIsRejected) {
  auto auth = Make(BaseOptions());
  ExpectRejected(auth->Authenticate(""), "Missing bearer token");
  ExpectRejected(auth->Authenticate("   "), "Missing bearer token");
  ExpectRejected(auth->Authenticate("Bearer"), "Missing bearer token");
  ExpectRejected(auth->Authenticate("Bearer    "), "Missing bearer token");
  ExpectRejected(auth->Authenticate("Basic dXNlcjpwYXNzd29yZA=="), "scheme is not Bearer");
  ExpectRejected(auth->Authenticate("Bearerx abc"), "scheme is not Bearer");
  ExpectRejected(auth->Authenticate("Token abc"), "scheme is not Bearer");
}

TEST_F(AuthenticatorTest, DevTokensRejectedUnlessEnabled) {
  auto off = Make(BaseOptions());
  ExpectRejected(off->Authenticate("Bearer dev_customer_acme"), "Development tokens are disabled");

  AuthOptions o = BaseOptions();
  o.allow_dev_tokens = true;
  auto on = Make(std::move(o));
  auto p = on->Authenticate("Bearer dev_customer_acme-42");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->customer_id, "acme-42");
  EXPECT_EQ(p->subject, "dev_customer_acme-42");
  EXPECT_EQ(p->kind, Principal::Kind::kDevToken);

  // The scheme is case-insensitive and surrounding whitespace is allowed.
  auto q = on->Authenticate("  bEaReR \t dev_customer_x_1  ");
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_EQ(q->customer_id, "x_1");

  ExpectRejected(on->Authenticate("Bearer dev_customer_"), "invalid customer id");
  ExpectRejected(on->Authenticate("Bearer dev_customer_a/b"), "invalid customer id");
  ExpectRejected(on->Authenticate("Bearer dev_customer_" + std::string(65, 'a')),
                 "invalid customer id");
  EXPECT_TRUE(on->Authenticate("Bearer dev_customer_" + std::string(64, 'a')).ok());
}

// --- Valid JWTs --------------------------------------------------------------------------

TEST_F(AuthenticatorTest, AcceptsEachAlgorithmWithAndWithoutKid) {
  auto auth = Make(BaseOptions());
  struct Case {
    std::string alg, key, kid;
  };
  for (const Case& c : {Case{"HS256", kSecret, "hs1"}, Case{"RS256", rsa_->private_pem, "rsa1"},
                        Case{"ES256", ec_->private_pem, "ec1"}}) {
    SCOPED_TRACE(c.alg);
    for (bool with_kid : {true, false}) {
      Json extra = with_kid ? Json{{"kid", c.kid}} : Json::object();
      std::string token = MintJwt(c.alg, c.key, Claims("cust-" + c.alg), extra);
      auto p = auth->Authenticate(Bearer(token));
      ASSERT_TRUE(p.ok()) << p.status().ToString();
      EXPECT_EQ(p->customer_id, "cust-" + c.alg);
      EXPECT_EQ(p->subject, "user-7");
      EXPECT_EQ(p->kind, Principal::Kind::kJwt);
    }
  }
}

TEST_F(AuthenticatorTest, ScopesAndCustomClaimName) {
  AuthOptions o = BaseOptions();
  o.customer_claim = "tenant";
  auto auth = Make(std::move(o));
  Json claims = {{"tenant", "t-9"}, {"exp", kNow + 60}, {"scope", "vm:read  vm:write"}};
  auto p = auth->Authenticate(Bearer(MintJwt("HS256", kSecret, claims)));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->customer_id, "t-9");
  EXPECT_EQ(p->subject, "");
  EXPECT_EQ(p->scopes, (std::vector<std::string>{"vm:read", "vm:write"}));

  ExpectRejected(auth->Authenticate(Bearer(MintJwt("HS256", kSecret, Claims()))),
                 "Token has no tenant claim");
}

// --- Time claims ---------------------------------------------------------------------------

TEST_F(AuthenticatorTest, ExpiredToken) {
  auto auth = Make(BaseOptions());
  Json claims = Claims();
  claims["exp"] = kNow - 3600;
  std::string token = MintJwt("RS256", rsa_->private_pem, claims, {{"kid", "rsa1"}});
  ExpectRejected(auth->Authenticate(Bearer(token)), "Token expired", token);
}

TEST_F(AuthenticatorTest, NotYetValidToken) {
  auto auth = Make(BaseOptions());
  Json claims = Claims();
  claims["nbf"] = kNow + 3600;
  std::string token = MintJwt("ES256", ec_->private_pem, claims, {{"kid", "ec1"}});
  ExpectRejected(auth->Authenticate(Bearer(token)), "Token not yet valid", token);
}

TEST_F(AuthenticatorTest, LeewayBoundaries) {
  AuthOptions o = BaseOptions();
  o.leeway = std::chrono::seconds(30);
  auto auth = Make(std::move(o));
  const int64_t exp = kNow + 100;
  const int64_t nbf = kNow - 100;
  Json claims = Claims();
  claims["exp"] = exp;
  claims["nbf"] = nbf;
  const std::string token = Bearer(MintJwt("HS256", kSecret, claims));

  now_ = exp + 29;  // Past exp, inside the leeway.
  EXPECT_TRUE(auth->Authenticate(token).ok());
  now_ = exp + 30;  // Expired once now >= exp + leeway.
  ExpectRejected(auth->Authenticate(token), "Token expired");

  now_ = nbf - 30;  // Before nbf, inside the leeway.
  EXPECT_TRUE(auth->Authenticate(token).ok());
  now_ = nbf - 31;
  ExpectRejected(auth->Authenticate(token), "Token not yet valid");
}

TEST_F(AuthenticatorTest, ZeroLeewayIsExact) {
  AuthOptions o = BaseOptions();
  o.leeway = std::chrono::seconds(0);
  auto auth = Make(std::move(o));
  Json claims = Claims();
  claims["exp"] = kNow;
  const std::string token = Bearer(MintJwt("HS256", kSecret, claims));
  now_ = kNow - 1;
  EXPECT_TRUE(auth->Authenticate(token).ok());
  now_ = kNow;
  ExpectRejected(auth->Authenticate(token), "Token expired");
}

TEST_F(AuthenticatorTest, ExpiryRequiredByDefault) {
  Json claims = {{"customer_id", "c1"}};
  const std::string token = Bearer(MintJwt("HS256", kSecret, claims));
  ExpectRejected(Make(BaseOptions())->Authenticate(token), "Token has no exp claim");

  AuthOptions o = BaseOptions();
  o.require_expiry = false;
  EXPECT_TRUE(Make(std::move(o))->Authenticate(token).ok());

  claims["exp"] = "tomorrow";
  ExpectRejected(Make(BaseOptions())->Authenticate(Bearer(MintJwt("HS256", kSecret, claims))),
                 "exp is not a number");
}

// --- Issuer and audience ---------------------------------------------------------------------

TEST_F(AuthenticatorTest, IssuerChecked) {
  AuthOptions o = BaseOptions();
  o.issuer = "https://idp.example";
  auto auth = Make(std::move(o));
  Json claims = Claims();
  claims["iss"] = "https://idp.example";
  EXPECT_TRUE(auth->Authenticate(Bearer(MintJwt("HS256", kSecret, claims))).ok());

  claims["iss"] = "https://evil.example";
  ExpectRejected(auth->Authenticate(Bearer(MintJwt("HS256", kSecret, claims))),
                 "Token issuer mismatch");
  claims.erase("iss");
  ExpectRejected(auth->Authenticate(Bearer(MintJwt("HS256", kSecret, claims))),
                 "Token issuer mismatch");
}

TEST_F(AuthenticatorTest, AudienceChecked) {
  AuthOptions o = BaseOptions();
  o.audience = "metald";
  auto auth = Make(std::move(o));
  Json claims = Claims();
  claims["aud"] = "metald";
  EXPECT_TRUE(auth->Authenticate(Bearer(MintJwt("HS256", kSecret, claims))).ok());
  claims["aud"] = Json::array({"billing", "metald"});
  EXPECT_TRUE(auth->Authenticate(Bearer(MintJwt("HS256", kSecret, claims))).ok());

  claims["aud"] = "billing";
  ExpectRejected(auth->Authenticate(Bearer(MintJwt("HS256", kSecret, claims))),
                 "Token audience mismatch");
  claims["aud"] = Json::array({"billing", "metald2"});
  ExpectRejected(auth->Authenticate(Bearer(MintJwt("HS256", kSecret, claims))),
                 "Token audience mismatch");
  claims.erase("aud");
  ExpectRejected(auth->Authenticate(Bearer(MintJwt("HS256", kSecret, claims))),
                 "Token audience mismatch");
}

TEST_F(AuthenticatorTest, UncheckedWhenNotConfigured) {
  auto auth = Make(BaseOptions());
  Json claims = Claims();
  claims["iss"] = "anyone";
  claims["aud"] = "anything";
  EXPECT_TRUE(auth->Authenticate(Bearer(MintJwt("HS256", kSecret, claims))).ok());
}

// --- Signatures and algorithms ---------------------------------------------------------------

TEST_F(AuthenticatorTest, BadSignature) {
  auto auth = Make(BaseOptions());
  // Signed with another key of the right type.
  for (const auto& [alg, key, kid] :
       {std::tuple<std::string, std::string, std::string>{"HS256", kSecret + "x", "hs1"},
        {"RS256", rsa_other_->private_pem, "rsa1"},
        {"ES256", ec_other_->private_pem, "ec1"}}) {
    SCOPED_TRACE(alg);
    std::string token = MintJwt(alg, key, Claims(), {{"kid", kid}});
    ExpectRejected(auth->Authenticate(Bearer(token)), "Token signature invalid", token);
  }
  // Payload changed after signing (customer swapped).
  std::string good = MintJwt("RS256", rsa_->private_pem, Claims("victim"), {{"kid", "rsa1"}});
  std::string forged_payload = Base64Url(Claims("attacker").dump());
  size_t d1 = good.find('.'), d2 = good.rfind('.');
  std::string forged = good.substr(0, d1 + 1) + forged_payload + good.substr(d2);
  ExpectRejected(auth->Authenticate(Bearer(forged)), "Token signature invalid", forged);

  // One bit flipped in the signature.
  std::string sig = *internal::Base64UrlDecode(good.substr(d2 + 1));
  sig[10] ^= 0x01;
  std::string flipped = good.substr(0, d2 + 1) + Base64Url(sig);
  ExpectRejected(auth->Authenticate(Bearer(flipped)), "Token signature invalid", flipped);

  // Truncated signature, and an empty one.
  ExpectRejected(auth->Authenticate(Bearer(good.substr(0, d2 + 1) + Base64Url(sig.substr(0, 64)))),
                 "Token signature invalid");
  ExpectRejected(auth->Authenticate(Bearer(good.substr(0, d2 + 1))), "Token signature invalid");
}

TEST_F(AuthenticatorTest, Es256DerSignatureIsRejected) {
  // JOSE requires raw r || s; a DER ECDSA-Sig-Value (what OpenSSL emits) must not verify.
  auto auth = Make(BaseOptions());
  std::string token = MintJwt("ES256", ec_->private_pem, Claims(), {{"kid", "ec1"}});
  size_t d2 = token.rfind('.');
  std::string raw = *internal::Base64UrlDecode(token.substr(d2 + 1));
  ASSERT_EQ(raw.size(), 64u);
  // Minimal DER of SEQUENCE { INTEGER r, INTEGER s } with 33-byte integers.
  std::string der = "\x30\x46\x02\x21";
  der += '\0';
  der += raw.substr(0, 32);
  der += "\x02\x21";
  der += '\0';
  der += raw.substr(32);
  std::string bad = token.substr(0, d2 + 1) + Base64Url(der);
  ExpectRejected(auth->Authenticate(Bearer(bad)), "Token signature invalid");
}

TEST_F(AuthenticatorTest, AlgNoneRejected) {
  auto auth = Make(BaseOptions());
  for (const char* alg : {"none", "None", "NONE"}) {
    SCOPED_TRACE(alg);
    std::string token = MintJwt(alg, "", Claims());
    ASSERT_EQ(token.back(), '.');  // Unsecured JWS: empty signature.
    ExpectRejected(auth->Authenticate(Bearer(token)), "Token algorithm none is not accepted",
                   token);
    ExpectRejected(auth->Authenticate(Bearer(MintJwt(alg, "", Claims(), {{"kid", "hs1"}}))),
                   "Token algorithm none is not accepted");
  }
}

TEST_F(AuthenticatorTest, Hs256SignedWithRsaPublicKeyRejected) {
  // The classic algorithm swap: the attacker knows the RSA public key and uses its PEM as an
  // HMAC secret. The key is bound to RS256, so HS256 never reaches a verifier.
  AuthOptions o;
  o.keys.push_back({"rsa1", JwtAlgorithm::kRS256, rsa_->public_pem});
  o.clock = [] { return At(kNow); };
  auto auth = Make(std::move(o));
  std::string with_kid = MintJwt("HS256", rsa_->public_pem, Claims(), {{"kid", "rsa1"}});
  ExpectRejected(auth->Authenticate(Bearer(with_kid)),
                 "Token algorithm HS256 does not match key rsa1 (RS256)", with_kid);
  std::string without_kid = MintJwt("HS256", rsa_->public_pem, Claims());
  ExpectRejected(auth->Authenticate(Bearer(without_kid)),
                 "Token algorithm HS256 does not match key rsa1 (RS256)", without_kid);

  // And an RSA public key can never be configured as an HS256 secret.
  AuthOptions bad;
  bad.keys.push_back({"oops", JwtAlgorithm::kHS256, rsa_->public_pem});
  auto created = Authenticator::Create(std::move(bad));
  ASSERT_FALSE(created.ok());
  EXPECT_EQ(created.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(created.status().message(), HasSubstr("looks like a PEM key"));
}

TEST_F(AuthenticatorTest, AlgorithmMismatchWithMultipleKeys) {
  auto auth = Make(BaseOptions());
  // ES256 token claiming the RSA key's kid.
  ExpectRejected(
      auth->Authenticate(Bearer(MintJwt("ES256", ec_->private_pem, Claims(), {{"kid", "rsa1"}}))),
      "Token algorithm ES256 does not match key rsa1 (RS256)");
  // Token header says RS256 but is HMAC-signed: the RSA verifier rejects it.
  std::string swapped = MintJwt("HS256", kSecret, Claims(), {{"alg", "RS256"}});
  ExpectRejected(auth->Authenticate(Bearer(swapped)), "Token signature invalid", swapped);

  AuthOptions only_hs;
  only_hs.keys.push_back({"hs1", JwtAlgorithm::kHS256, kSecret});
  only_hs.keys.push_back({"hs2", JwtAlgorithm::kHS256, kSecret + "2"});
  ExpectRejected(
      Make(std::move(only_hs))->Authenticate(Bearer(MintJwt("RS256", rsa_->private_pem, Claims()))),
      "Token algorithm RS256 matches no configured key");
}

TEST_F(AuthenticatorTest, UnsupportedAlgorithms) {
  auto auth = Make(BaseOptions());
  ExpectRejected(auth->Authenticate(Bearer(MintJwt("HS512", kSecret, Claims()))),
                 "Token algorithm HS512 is not supported");
  ExpectRejected(auth->Authenticate(Bearer(MintJwt("hs256", kSecret, Claims()))),
                 "Token algorithm hs256 is not supported");
  // Arbitrary token-chosen text is not echoed.
  auto r = auth->Authenticate(Bearer(MintJwt("<script>alert(1)</script>", "", Claims())));
  ExpectRejected(r, "Token algorithm is not supported");
  EXPECT_THAT(r.status().message(), ::testing::Not(HasSubstr("script")));
}

TEST_F(AuthenticatorTest, WrongKidRejected) {
  auto auth = Make(BaseOptions());
  ExpectRejected(auth->Authenticate(Bearer(MintJwt("HS256", kSecret, Claims(), {{"kid", "nope"}}))),
                 "Token key id is unknown");
  ExpectRejected(auth->Authenticate(Bearer(MintJwt("HS256", kSecret, Claims(), {{"kid", 7}}))),
                 "kid is not a string");
  // The right key material under another kid still fails: kid pins the key.
  ExpectRejected(
      auth->Authenticate(Bearer(MintJwt("RS256", rsa_->private_pem, Claims(), {{"kid", "ec1"}}))),
      "does not match key ec1 (ES256)");
}

TEST_F(AuthenticatorTest, CritHeaderRejected) {
  auto auth = Make(BaseOptions());
  ExpectRejected(auth->Authenticate(
                     Bearer(MintJwt("HS256", kSecret, Claims(), {{"crit", Json::array({"exp"})}}))),
                 "unsupported critical header");
}

// --- Malformed input -----------------------------------------------------------------------

TEST_F(AuthenticatorTest, GarbageRejected) {
  auto auth = Make(BaseOptions());
  const std::string valid = MintJwt("HS256", kSecret, Claims());
  const size_t d1 = valid.find('.');
  const size_t d2 = valid.rfind('.');
  const std::string header = valid.substr(0, d1);
  const std::string payload = valid.substr(d1 + 1, d2 - d1 - 1);
  const std::string sig = valid.substr(d2 + 1);
  for (const std::string& t : std::vector<std::string>{
           "garbage",
           "a.b",
           "a.b.c.d",
           "..",
           "...",
           header + "." + payload,
           valid + ".",
           "!!!." + payload + "." + sig,
           header + "=." + payload + "." + sig,                // padding
           "e" + header + "." + payload + "." + sig,           // length 1 mod 4 / wrong JSON
           Base64Url("not json") + "." + payload + "." + sig,  // header not JSON
           Base64Url("[1,2]") + "." + payload + "." + sig,     // header not an object
           Base64Url("{\"typ\":\"JWT\"}") + "." + payload + "." + sig,  // no alg
           Base64Url("{\"alg\":5}") + "." + payload + "." + sig,
           header + "." + payload + "." + sig + "*",
           header + "." + payload + "." + sig + "===",
           "Bearer " + valid,
           std::string(20000, 'a'),
       }) {
    SCOPED_TRACE(t.substr(0, 60));
    auto r = auth->Authenticate(Bearer(t));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kUnauthenticated);
    EXPECT_THAT(r.status().message(), StartsWith("Malformed token"));
  }
  // A correctly signed token whose payload is not JSON.
  ExpectRejected(
      auth->Authenticate(Bearer(MintJwtRaw("HS256", kSecret, R"({"alg":"HS256"})", "not json"))),
      "Malformed token: payload");
  ExpectRejected(auth->Authenticate(
                     Bearer(MintJwtRaw("HS256", kSecret, R"({"alg":"HS256"})", "\"a string\""))),
                 "Malformed token: payload");
}

TEST_F(AuthenticatorTest, MissingOrInvalidCustomerClaim) {
  auto auth = Make(BaseOptions());
  Json claims = Claims();
  claims.erase("customer_id");
  std::string token = MintJwt("RS256", rsa_->private_pem, claims, {{"kid", "rsa1"}});
  ExpectRejected(auth->Authenticate(Bearer(token)), "Token has no customer_id claim", token);

  for (const Json& bad :
       {Json("../etc"), Json(""), Json(42), Json(std::string(65, 'c')), Json::array({"a"})}) {
    claims["customer_id"] = bad;
    ExpectRejected(auth->Authenticate(Bearer(MintJwt("HS256", kSecret, claims))),
                   "Token customer_id claim is not a valid customer id");
  }
}

TEST_F(AuthenticatorTest, NoJwtKeysConfigured) {
  AuthOptions o;
  o.allow_dev_tokens = true;
  auto auth = Make(std::move(o));
  EXPECT_EQ(auth->key_count(), 0u);
  ExpectRejected(auth->Authenticate(Bearer(MintJwt("HS256", kSecret, Claims()))),
                 "JWT authentication is not configured");
}

// --- Configuration ---------------------------------------------------------------------------

TEST_F(AuthenticatorTest, CreateRejectsBadKeys) {
  auto expect_invalid = [](JwtKey key, const std::string& want) {
    AuthOptions o;
    o.keys.push_back(std::move(key));
    auto a = Authenticator::Create(std::move(o));
    ASSERT_FALSE(a.ok()) << want;
    EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(a.status().message(), HasSubstr(want));
  };
  expect_invalid({"k", JwtAlgorithm::kHS256, "short"}, "shorter than 32 bytes");
  expect_invalid({"k", JwtAlgorithm::kRS256, "not a pem"}, "not a PEM public key");
  expect_invalid({"k", JwtAlgorithm::kRS256, ec_->public_pem}, "RS256 needs an RSA public key");
  expect_invalid({"k", JwtAlgorithm::kES256, rsa_->public_pem}, "ES256 needs an EC public key");
  expect_invalid({"k", JwtAlgorithm::kRS256, rsa_->private_pem}, "not a PEM public key");
  KeyPair small = testing_util::GenerateRsaKeyPair(1024);
  expect_invalid({"k", JwtAlgorithm::kRS256, small.public_pem}, "outside [2048, 8192]");

  AuthOptions dup;
  dup.keys.push_back({"same", JwtAlgorithm::kHS256, kSecret});
  dup.keys.push_back({"same", JwtAlgorithm::kRS256, rsa_->public_pem});
  auto a = Authenticator::Create(std::move(dup));
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(), HasSubstr("configured twice"));

  AuthOptions bad_leeway;
  bad_leeway.leeway = std::chrono::seconds(-1);
  EXPECT_FALSE(Authenticator::Create(std::move(bad_leeway)).ok());
  AuthOptions bad_claim;
  bad_claim.customer_claim = "";
  EXPECT_FALSE(Authenticator::Create(std::move(bad_claim)).ok());
}

TEST_F(AuthenticatorTest, CreateErrorsNeverContainSecrets) {
  AuthOptions o;
  const std::string secret = "tiny-secret-xyz";
  o.keys.push_back({"k", JwtAlgorithm::kHS256, secret});
  auto a = Authenticator::Create(std::move(o));
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(), ::testing::Not(HasSubstr(secret)));
}

class JwksFileTest : public AuthenticatorTest {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("metald_auth_jwks_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& text) {
    std::string path = dir_ / "jwks.json";
    std::ofstream(path) << text;
    return path;
  }

  std::filesystem::path dir_;
};

TEST_F(JwksFileTest, LoadsSigningKeysAndSkipsOthers) {
  Json jwks = {{"keys", Json::array({
                            testing_util::PublicJwk(rsa_->public_pem, "jw-rsa", "RS256"),
                            testing_util::PublicJwk(ec_->public_pem, "jw-ec", ""),  // no alg
                            testing_util::SecretJwk(kSecret, "jw-hs", ""),
                            // Skipped: encryption key, unsupported algorithm, unknown kty.
                            [&] {
                              Json j = testing_util::PublicJwk(rsa_other_->public_pem, "enc", "");
                              j["use"] = "enc";
                              return j;
                            }(),
                            testing_util::PublicJwk(rsa_other_->public_pem, "rs512", "RS512"),
                            Json{{"kty", "OKP"}, {"crv", "Ed25519"}, {"x", "AAAA"}},
                        })}};
  AuthOptions o;
  o.jwks_file = Write(jwks.dump(2));
  o.clock = [] { return At(kNow); };
  auto auth = Make(std::move(o));
  ASSERT_NE(auth, nullptr);
  EXPECT_EQ(auth->key_count(), 3u);

  auto p = auth->Authenticate(
      Bearer(MintJwt("RS256", rsa_->private_pem, Claims("r"), {{"kid", "jw-rsa"}})));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->customer_id, "r");
  p = auth->Authenticate(
      Bearer(MintJwt("ES256", ec_->private_pem, Claims("e"), {{"kid", "jw-ec"}})));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->customer_id, "e");
  p = auth->Authenticate(Bearer(MintJwt("HS256", kSecret, Claims("h"), {{"kid", "jw-hs"}})));
  ASSERT_TRUE(p.ok()) << p.status().ToString();

  // The skipped keys verify nothing.
  ExpectRejected(auth->Authenticate(
                     Bearer(MintJwt("RS256", rsa_other_->private_pem, Claims(), {{"kid", "enc"}}))),
                 "Token key id is unknown");
  // A JWK bound to ES256 from its kty refuses HS256 tokens naming it.
  ExpectRejected(
      auth->Authenticate(Bearer(MintJwt("HS256", kSecret, Claims(), {{"kid", "jw-ec"}}))),
      "Token algorithm HS256 does not match key jw-ec (ES256)");
}

TEST_F(JwksFileTest, CombinesWithInlineKeys) {
  AuthOptions o = BaseOptions();
  o.jwks_file = Write(
      Json{{"keys", {testing_util::PublicJwk(rsa_other_->public_pem, "jw", "RS256")}}}.dump());
  auto auth = Make(std::move(o));
  EXPECT_EQ(auth->key_count(), 4u);
  EXPECT_TRUE(auth->Authenticate(
                      Bearer(MintJwt("RS256", rsa_other_->private_pem, Claims(), {{"kid", "jw"}})))
                  .ok());
  EXPECT_TRUE(
      auth->Authenticate(Bearer(MintJwt("HS256", kSecret, Claims(), {{"kid", "hs1"}}))).ok());
}

TEST_F(JwksFileTest, BadFilesFailCreate) {
  auto create_status = [&](const std::string& path) {
    AuthOptions o;
    o.jwks_file = path;
    return Authenticator::Create(std::move(o)).status();
  };
  EXPECT_EQ(create_status((dir_ / "missing.json").string()).code(), StatusCode::kNotFound);
  EXPECT_EQ(create_status(Write("{not json")).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(create_status(Write(R"({"keys": {}})")).code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(create_status(Write(R"({"keys": []})")).message(), HasSubstr("no usable"));

  Json mismatched = testing_util::PublicJwk(rsa_->public_pem, "x", "HS256");
  base::Status s = create_status(Write(Json{{"keys", {mismatched}}}.dump()));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("does not fit kty RSA"));

  Json bad_point = testing_util::PublicJwk(ec_->public_pem, "x", "ES256");
  bad_point["y"] = bad_point["x"];  // Almost surely not on the curve.
  EXPECT_EQ(create_status(Write(Json{{"keys", {bad_point}}}.dump())).code(),
            StatusCode::kInvalidArgument);

  Json short_secret = testing_util::SecretJwk("short", "s", "HS256");
  EXPECT_THAT(create_status(Write(Json{{"keys", {short_secret}}}.dump())).message(),
              HasSubstr("shorter than 32 bytes"));

  Json bad_b64 = testing_util::PublicJwk(rsa_->public_pem, "x", "RS256");
  bad_b64["n"] = "abc=";
  EXPECT_THAT(create_status(Write(Json{{"keys", {bad_b64}}}.dump())).message(),
              HasSubstr("not valid base64url"));
}

// --- Policy, concurrency, base64url ----------------------------------------------------------

TEST(MayAccessTest, OnlyTheOwningCustomer) {
  Principal p;
  p.customer_id = "acme";
  EXPECT_TRUE(MayAccess(p, "acme"));
  EXPECT_FALSE(MayAccess(p, "acme2"));
  EXPECT_FALSE(MayAccess(p, "ACME"));
  EXPECT_FALSE(MayAccess(p, ""));
  Principal empty;
  EXPECT_FALSE(MayAccess(empty, ""));
  EXPECT_FALSE(MayAccess(empty, "acme"));
}

TEST_F(AuthenticatorTest, ConcurrentAuthenticate) {
  auto auth = Make(BaseOptions());
  const std::string rs =
      Bearer(MintJwt("RS256", rsa_->private_pem, Claims("a"), {{"kid", "rsa1"}}));
  const std::string es = Bearer(MintJwt("ES256", ec_->private_pem, Claims("b")));
  const std::string bad = Bearer(MintJwt("HS256", kSecret + "z", Claims()));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        if (!auth->Authenticate(rs).ok() || !auth->Authenticate(es).ok() ||
            auth->Authenticate(bad).ok()) {
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(Base64UrlTest, StrictDecoding) {
  EXPECT_EQ(internal::Base64UrlDecode(""), std::string());
  EXPECT_EQ(internal::Base64UrlDecode("QQ"), std::string("A"));
  EXPECT_EQ(internal::Base64UrlDecode("QUI"), std::string("AB"));
  EXPECT_EQ(internal::Base64UrlDecode("QUJD"), std::string("ABC"));
  EXPECT_EQ(internal::Base64UrlDecode("-_8"), std::string("\xfb\xff"));
  EXPECT_FALSE(internal::Base64UrlDecode("QR"));    // Non-zero unused bits.
  EXPECT_FALSE(internal::Base64UrlDecode("QQ=="));  // Padding.
  EXPECT_FALSE(internal::Base64UrlDecode("Q"));     // 1 mod 4.
  EXPECT_FALSE(internal::Base64UrlDecode("+/8A"));  // Standard alphabet.
  EXPECT_FALSE(internal::Base64UrlDecode("QU I"));
  std::mt19937 rng(7);
  for (int len = 0; len < 70; ++len) {
    std::string bytes;
    for (int i = 0; i < len; ++i) bytes.push_back(static_cast<char>(rng()));
    std::string enc = internal::Base64UrlEncode(bytes);
    EXPECT_EQ(enc.find('='), std::string::npos);
    EXPECT_EQ(internal::Base64UrlDecode(enc), bytes) << len;
  }
}

#ifdef METALD_AUTH_FUZZ_CORPUS
// The fuzz seeds (jwt_fuzz.cc) are only useful if they reach the checks they were written for.
TEST(FuzzCorpusTest, SeedsReachTheirChecks) {
  AuthOptions o;
  o.allow_dev_tokens = true;
  o.keys.push_back({"hs", JwtAlgorithm::kHS256, "metald-fuzz-secret-0123456789abcdef"});
  o.keys.push_back({"rs", JwtAlgorithm::kRS256, testing_util::GenerateRsaKeyPair().public_pem});
  o.keys.push_back({"es", JwtAlgorithm::kES256, testing_util::GenerateEcP256KeyPair().public_pem});
  o.issuer = "fuzz-issuer";
  o.audience = "metald";
  o.clock = [] { return At(kNow); };
  auto auth = Authenticator::Create(std::move(o));
  ASSERT_TRUE(auth.ok());
  auto run = [&](const std::string& name) {
    std::ifstream in(std::string(METALD_AUTH_FUZZ_CORPUS) + "/" + name);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_FALSE(text.empty()) << name;
    return (*auth)->Authenticate(text);
  };
  auto valid = run("hs256_valid");
  ASSERT_TRUE(valid.ok()) << valid.status().ToString();
  EXPECT_EQ(valid->customer_id, "acme");
  EXPECT_TRUE(run("hs256_nokid").ok());
  EXPECT_TRUE(run("dev_token").ok());
  const std::vector<std::pair<std::string, std::string>> rejected = {
      {"basic", "scheme is not Bearer"},
      {"alg_none", "Token algorithm none is not accepted"},
      {"alg_swap", "does not match key rs (RS256)"},
      {"expired", "Token expired"},
      {"rs256_badsig", "Token signature invalid"},
      {"es256_badsig", "Token signature invalid"},
      {"crit", "unsupported critical header"},
  };
  for (const auto& [name, want] : rejected) {
    auto r = run(name);
    ASSERT_FALSE(r.ok()) << name;
    EXPECT_THAT(r.status().message(), HasSubstr(want)) << name;
  }
}
#endif

}  // namespace
}  // namespace metald::auth
