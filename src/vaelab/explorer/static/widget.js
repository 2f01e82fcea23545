// The notebook widget's entry point (anywidget): the explorer of explorer.js, which the Python
// side puts before this file in one module, its requests answered by the Python widget over the
// widget's comm instead of HTTP. Each request carries an id; the answer names it.

function commApi(model) {
  let next = 0;
  const waiting = new Map();
  const onAnswer = (message) => {
    const handlers = waiting.get(message.id);
    if (!handlers) return;
    waiting.delete(message.id);
    if (message.error !== undefined) handlers.reject(new Error(message.error));
    else handlers.resolve(message.payload);
  };
  model.on("msg:custom", onAnswer);
  const api = (path, body) => new Promise((resolve, reject) => {
    next += 1;
    waiting.set(next, { resolve, reject });
    model.send({ id: next, path, body: body === undefined ? null : body });
  });
  return { api, close: () => model.off("msg:custom", onAnswer) };
}

export default {
  render({ model, el }) {
    el.classList.add("vaelab-explorer");
    el.innerHTML = model.get("_markup");
    const comm = commApi(model);
    startExplorer(el, comm.api);
    return comm.close;
  },
};
