// The console's card form: Stripe.js confirms a SetupIntent with the card element, then the
// form posts only the SetupIntent's id. The card number never reaches matrixhost (R13).
"use strict";
(function () {
  var form = document.getElementById("card-form");
  if (!form || typeof Stripe === "undefined") { return; }
  var stripe = Stripe(form.dataset.publishableKey);
  var card = stripe.elements().create("card");
  card.mount("#card-element");
  var errors = document.getElementById("card-errors");
  var button = form.querySelector("button[type=submit]");
  form.addEventListener("submit", function (event) {
    if (form.elements.setup_intent.value) { return; }
    event.preventDefault();
    errors.textContent = "";
    button.disabled = true;
    stripe.confirmCardSetup(form.dataset.clientSecret, { payment_method: { card: card } }).then(function (result) {
      if (result.error) {
        var why = (result.error && result.error.message) || "The card was refused.";
        errors.textContent = "Your card was not saved: " + why + " Nothing was charged. Check the details or use another card.";
        button.disabled = false;
        return;
      }
      form.elements.setup_intent.value = result.setupIntent.id;
      form.submit();
    });
  });
})();
